"""The supervisor's answers to the API process: one handler per request of link.vocabulary.protocol, in
one dispatch table, each answering with the request's id.

An object the Arbiter holds, given the narrow `Host` below (the VIP records, the store, a way
to start, order and stop workers, a way to answer): testable without an arbiter. It also
finishes what a request left waiting on a worker (candidates, failover, delete).
"""
from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Iterable, Protocol

from link.vocabulary import protocol
from link.config import Config
from link.vocabulary.protocol import (AddIp, ApiListening, CandidatesDone, DeleteIp, Done, FailoverDone, FailoverIp, GetEvents,
                           GetIp, GetMetrics, HandOver, ListIps, Message, ProtocolError, ReadCandidates, Refused, UpdateIp,
                           WirePeers)
from link.supervisor import lifecycle, observe
from link.supervisor.records import VipRecord
from link.supervisor.worker_states import WorkerEvent, WorkerState
from link.supervisor.store import StoreError, VipStore
from link.vocabulary.vip import VipSpec, address_of

logger = logging.getLogger(__name__)


class Host(Protocol):
    """What the request handlers need of the arbiter."""

    config: Config
    store: VipStore
    vips: dict[str, VipRecord]
    priority: int  # the host's, as signals set it
    stopping: bool

    def answer(self, reply: protocol.Answer) -> None:
        """Send an answer to the API process (dropped when it is gone)."""

    def send(self, record: VipRecord, command: Message) -> bool:
        """Send a command to the VIP's worker; False when it cannot be sent."""

    def spawn_worker(self, record: VipRecord) -> None: ...

    def stop_worker(self, record: VipRecord) -> None:
        """Tell the worker to release the VIP and exit (SIGTERM if its pipe is gone)."""

    def vips_changed(self) -> None:
        """A VIP was added or removed (the process title shows the count)."""

    def api_listening(self) -> None:
        """The API process listens (systemd's READY waits for it)."""

    def wire_peers(self, endpoints: list[dict[str, Any]]) -> None:
        """The peers' heartbeat endpoints published in etcd."""

    def wire_metrics(self) -> dict[str, Any] | None:
        """The heartbeat's counters (None: no wire)."""


class Refusal(Exception):
    """A request refused with an HTTP status and a sentence."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


WAITING = object()  # a handler's result: answered later, when the worker has done its part


class RequestHandlers:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._dispatch = protocol.Dispatcher(protocol.Family.REQUEST, {
            ListIps: self.list_ips, GetIp: self.get_ip, AddIp: self.add_ip, UpdateIp: self.update_ip,
            DeleteIp: self.delete_ip, FailoverIp: self.failover_ip, GetEvents: self.events, GetMetrics: self.metrics,
            ApiListening: self.api_listening, WirePeers: lambda request, request_id: self.host.wire_peers(request.endpoints),
        })

    def reply(self, request_id: int, result: Any) -> None:
        self.host.answer(Done(request_id, result))

    def refuse(self, request_id: int, status: int, error: str) -> None:
        self.host.answer(Refused(request_id, status, error))

    def handle(self, wire: object) -> None:
        """One message from the API process's pipe."""
        try:
            request_id, request = protocol.decode_request(wire)
        except ProtocolError as exc:
            logger.warning("refused a message from the API process: %s", exc)
            if exc.request_id is not None:
                self.refuse(exc.request_id, 400, str(exc))
            return
        if self.host.stopping:
            self.refuse(request_id, 503, "the agent is shutting down")
            return
        try:
            result = self._dispatch(request, request_id)
        except Refusal as refusal:
            self.refuse(request_id, refusal.status, refusal.error)
            return
        if result is not WAITING:
            self.reply(request_id, result)

    def ip_object(self, record: VipRecord) -> dict[str, Any]:
        return record.to_api(self.host.config, self.host.priority)

    def _find(self, vip_id: str) -> VipRecord:
        record = self.host.vips.get(vip_id)
        if record is None:
            raise Refusal(404, "not found")
        return record

    def _persist(self, vips: Iterable[VipRecord], replace: VipSpec | None = None) -> None:
        """Write the list; `replace` stands for the record of the same id. VIPs whose delete is
        under way are left out: their deletion was written already, and must stay written."""
        specs = [replace if replace is not None and replace.id == record.id else record.spec
                 for record in vips if not record.delete_waiters]
        try:
            self.host.store.save(specs)
        except StoreError as exc:
            raise Refusal(503, str(exc)) from None

    # -- the requests -------------------------------------------------------------------------
    def list_ips(self, request: ListIps, request_id: int) -> Any:
        return [self.ip_object(r) for r in self.host.vips.values()]

    def get_ip(self, request: GetIp, request_id: int) -> Any:
        """One VIP, with the candidates its worker reads from etcd (their priority and state)."""
        record = self._find(request.vip_id)
        if record.worker_state is WorkerState.RUNNING and self.host.send(record, ReadCandidates(request_id)):
            record.candidate_waiters.append(request_id)
            return WAITING
        return {**self.ip_object(record), "candidates": []}

    def events(self, request: GetEvents, request_id: int) -> Any:
        return observe.events_answer(self._find(request.vip_id))

    def metrics(self, request: GetMetrics, request_id: int) -> Any:
        return {**observe.metrics_answer(self.host.vips.values()), "wire": self.host.wire_metrics()}

    def api_listening(self, request: ApiListening, request_id: int) -> None:
        self.host.api_listening()

    def add_ip(self, request: AddIp, request_id: int) -> Any:
        ip, settings, vips = request.ip, request.settings, self.host.vips
        # One address is one VIP whatever its prefix length: 198.51.100.5/24 beside /32 would
        # be two lock keys, so two hosts could bind the same address.
        existing = next((r for r in vips.values() if address_of(r.ip) == address_of(ip)), None)
        if existing is not None:
            raise Refusal(409, f"ip {ip} is already configured on this host as {existing.id} ({existing.ip})")
        # Counted with the VIPs being deleted: their workers still run until they have let go.
        max_vips = self.host.config.max_vips
        if len(vips) >= max_vips:
            raise Refusal(409, f"this agent has {len(vips)} VIPs, the most MAX_VIPS={max_vips} allows: "
                          "delete one, or raise MAX_VIPS (each VIP is a process)")
        # The settings absent from the request take VipSpec's defaults.
        try:
            spec = VipSpec.from_json({**settings, "id": f"vip-{uuid.uuid4()}", "ip": ip})
        except ValueError as exc:  # a binder kind this agent does not know (the API checked it)
            raise Refusal(400, str(exc)) from None
        record = VipRecord(spec=spec, since=time.time())
        self._persist([*vips.values(), record])
        vips[record.id] = record
        self.host.spawn_worker(record)
        self.host.vips_changed()
        logger.info("added %s as %s", ip, record.id)
        return self.ip_object(record)

    def update_ip(self, request: UpdateIp, request_id: int) -> Any:
        """Replace a VIP's settings (its health checks) live: persisted, then sent to its worker."""
        record = self._find(request.vip_id)
        spec = VipSpec.from_json({**record.spec.to_json(), **request.settings})
        self._persist(self.host.vips.values(), replace=spec)
        record.spec = spec
        # Not sent: the worker is dying, and its successor starts with the new spec.
        self.host.send(record, protocol.Settings(spec.to_json()))
        logger.info("updated %s: %d health check(s)", record.ip, len(spec.checks))
        return self.ip_object(record)

    def failover_ip(self, request: FailoverIp, request_id: int) -> Any:
        record = self._find(request.vip_id)
        if record.conn is None or record.conn.closed or record.worker_state is not WorkerState.RUNNING:
            raise Refusal(409, f"the worker of {record.ip} is not running ({record.worker_state.value})")
        if not self.host.send(record, HandOver(request_id)):
            raise Refusal(503, f"the worker of {record.ip} is gone")
        record.failover_waiters.append(request_id)
        return WAITING

    def delete_ip(self, request: DeleteIp, request_id: int) -> Any:
        record = self._find(request.vip_id)
        # Persisted first: a delete that cannot be written (a full disk) changes nothing, rather
        # than unbinding the VIP and revoking its lease while the file still lists it.
        self._persist(r for r in self.host.vips.values() if r is not record)
        record.delete_waiters.append(request_id)
        if record.pid is not None:
            if lifecycle.change(record, WorkerEvent.STOP, f"{record.ip} deleted"):
                record.respawn_at = None
                self.host.stop_worker(record)
            return WAITING  # answered when the worker has released the VIP and exited
        # No process (queued at the boot gate, or waiting for a respawn): never forked now.
        lifecycle.change(record, WorkerEvent.STOP, f"{record.ip} deleted before its worker started")
        record.respawn_at = None
        self.finish_delete(record)
        return WAITING

    # -- what a worker finishes ---------------------------------------------------------------
    def candidates_done(self, report: CandidatesDone, record: VipRecord) -> None:
        if report.request in record.candidate_waiters:
            record.candidate_waiters.remove(report.request)
            self.reply(report.request, {**self.ip_object(record), "candidates": report.candidates,
                                        **({"candidates_error": report.error} if report.error else {})})

    def failover_done(self, report: FailoverDone, record: VipRecord) -> None:
        if report.request in record.failover_waiters:
            record.failover_waiters.remove(report.request)
            if report.status < 300:
                self.reply(report.request, None)
            else:
                self.refuse(report.request, report.status, report.error or "failover refused")

    def worker_gone(self, record: VipRecord) -> None:
        """Its worker exited: what waited on it is answered now."""
        for request_id in record.failover_waiters:
            self.refuse(request_id, 503, f"the worker of {record.ip} exited during the failover")
        record.failover_waiters = []
        for request_id in record.candidate_waiters:
            self.reply(request_id, {**self.ip_object(record), "candidates": []})
        record.candidate_waiters = []

    def finish_delete(self, record: VipRecord) -> None:
        # The file no longer lists it (delete_ip wrote that before stopping the worker).
        waiters, record.delete_waiters = record.delete_waiters, []
        del self.host.vips[record.id]
        self.host.vips_changed()
        logger.info("deleted %s (%s)", record.ip, record.id)
        for request_id in waiters:
            self.reply(request_id, None)
