"""The API process's requests to the supervisor (link.vocabulary.protocol)."""
from __future__ import annotations

from typing import Any, Mapping, Union

from link.vocabulary.message_base import _spread, ADD_SETTINGS, Family, Message, message, UPDATE_SETTINGS


# -- API process -> supervisor: {"op": kind, "id": <int>, ...} ------------------------------
@message(Family.REQUEST, "list")
class ListIps(Message):
    """`[ip_object, ...]`"""


@message(Family.REQUEST, "get")
class GetIp(Message):
    """`ip_object` with `candidates` (from the worker; `candidates_error` when etcd could not say)"""

    vip_id: str


@message(Family.REQUEST, "add")
class AddIp(Message):
    """`ip_object` (status `BOOTING`); the API validated the settings and filled in defaults"""

    ip: str  # already normalised CIDR
    settings: Mapping[str, Any] = _spread(ADD_SETTINGS)


@message(Family.REQUEST, "update")
class UpdateIp(Message):
    """`ip_object`; the worker applies the new settings live"""

    vip_id: str
    settings: Mapping[str, Any] = _spread(UPDATE_SETTINGS)


@message(Family.REQUEST, "delete")
class DeleteIp(Message):
    """`None`, sent only after the worker released the VIP"""

    vip_id: str


@message(Family.REQUEST, "failover")
class FailoverIp(Message):
    """`None` once this host unbound the VIP and freed the lock; 409 if it does not hold it or no other host competes"""

    vip_id: str


@message(Family.REQUEST, "events")
class GetEvents(Message):
    """`[{"time", "from", "to", "event", "reason", "source"}, ...]`, oldest first (the last 100)"""

    vip_id: str


@message(Family.REQUEST, "metrics")
class GetMetrics(Message):
    """`{"workers": <running>, "vips": [{"id", "ip", "status", "since", "worker_state", "restarts", "metrics"}]}`"""


@message(Family.REQUEST, "listening")
class ApiListening(Message):
    """`None`: the API process listens (the supervisor tells systemd READY once its workers booted too)"""


@message(Family.REQUEST, "wire_peers")
class WirePeers(Message):
    """`None`: the peers' heartbeat endpoints `[{"address", "port"}]` published in etcd (`/link/agents/`), read every second for 30 s after start, then every 10 s"""

    endpoints: list[dict[str, Any]]


Request = Union[ListIps, GetIp, AddIp, UpdateIp, DeleteIp, FailoverIp, GetEvents, GetMetrics, ApiListening, WirePeers]
