"""The supervisor's commands to a worker (link.vocabulary.protocol)."""
from __future__ import annotations

from dataclasses import field
from typing import Any, Union

from link.vocabulary.message_base import Family, ITEMS, Message, message
from link.vocabulary.wire_views import HeardPeer


# -- supervisor -> worker: {"type": kind, ...} ----------------------------------------------
@message(Family.COMMAND, "stop")
class Stop(Message):
    """release the VIP (unbind, free the lock) and exit"""


@message(Family.COMMAND, "settings")
class Settings(Message):
    """the VIP's new settings (`VipSpec.to_json()`), applied live"""

    spec: dict[str, Any] = field(repr=False)  # holds a webhook binder's secret


@message(Family.COMMAND, "log_level")
class LogLevel(Message):
    """LOGGER_LEVEL changed (SIGHUP)"""

    level: str


@message(Family.COMMAND, "priority")
class Priority(Message):
    """the host's priority changed (SIGUSR1, SIGUSR2, SIGHUP); a VIP's own priority wins"""

    priority: int


@message(Family.COMMAND, "candidates")
class ReadCandidates(Message):
    """read the candidates from etcd for `GET /ips/<id>`; answered by `candidates_done`"""

    request: int  # the API request's id


@message(Family.COMMAND, "failover")
class HandOver(Message):
    """give the VIP to another host; answered by `failover_done`"""

    request: int


@message(Family.COMMAND, "wire_view")
class WireView(Message):
    """what the heartbeats say of the VIP, sent when it changes: live holders `[{"host", "priority", "lock"}]`, live eligible candidates, when a holder was last heard (monotonic), the heartbeat interval"""

    holders: tuple[HeardPeer, ...] = field(metadata={ITEMS: HeardPeer})
    candidates: tuple[HeardPeer, ...] = field(metadata={ITEMS: HeardPeer})
    holder_heard_at: float | None
    interval: float


@message(Family.COMMAND, "reannounce")
class Reannounce(Message):
    """another host stopped holding the VIP this host holds with the lock: announce it again now"""

    reason: str


Command = Union[Stop, Settings, LogLevel, Priority, ReadCandidates, HandOver, WireView, Reannounce]
