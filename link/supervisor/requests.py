"""The supervisor's answers to the API process: one `op_<name>` per operation of the pipe
protocol (docs/ARCHITECTURE.md), each replying with the request's id. Mixed into the Arbiter,
whose state (VIP records, store, pipes, config) they read and change.
"""
from __future__ import annotations

import logging
import signal
import time
import uuid
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable

from link.config import Config
from link.supervisor import observe, records
from link.supervisor.ops import ProcessOps
from link.supervisor.records import VipRecord
from link.supervisor.store import StoreError, VipStore
from link.vip import VipSpec

logger = logging.getLogger(__name__)


class RequestHandlers:
    # The Arbiter's state these handlers use (and its _send, spawn_worker, _set_title).
    config: Config
    store: VipStore
    ops: ProcessOps
    clock: Callable[[], float]
    vips: dict[str, VipRecord]
    api_conn: Connection | None
    priority: int
    stopping: bool

    def reply(self, request_id: int, ok: bool = True, result: Any = None, status: int = 200, error: str = "") -> None:
        answer = {"id": request_id, "ok": True, "result": result} if ok else {"id": request_id, "ok": False, "status": status, "error": error}
        if self.api_conn is None or self.api_conn.closed:
            return
        try:
            self.api_conn.send(answer)
        except OSError:
            logger.warning("could not answer the API process (it is gone)")

    def handle_request(self, message: dict) -> None:
        request_id = message.get("id", -1)
        if self.stopping:
            self.reply(request_id, False, status=503, error="the agent is shutting down")
            return
        op = message.get("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            self.reply(request_id, False, status=400, error=f"unknown operation {op!r}")
            return
        handler(request_id, message)

    def _find(self, request_id: int, message: dict) -> VipRecord | None:
        record = self.vips.get(str(message.get("vip_id")))
        if record is None:
            self.reply(request_id, False, status=404, error="not found")
        return record

    def op_list(self, request_id: int, message: dict) -> None:
        self.reply(request_id, result=[self._api(r) for r in self.vips.values()])

    def op_get(self, request_id: int, message: dict) -> None:
        """One VIP, with the candidates its worker reads from etcd (their priority and state)."""
        record = self._find(request_id, message)
        if record is None:
            return
        if record.worker_state == records.RUNNING and self._send(record, {"type": "candidates", "request": request_id}):
            record.candidate_waiters.append(request_id)
            return
        self.reply(request_id, result={**self._api(record), "candidates": []})

    def _api(self, record: VipRecord) -> dict:
        return record.to_api(self.config, self.priority)

    def op_events(self, request_id: int, message: dict) -> None:
        record = self._find(request_id, message)
        if record is not None:
            self.reply(request_id, result=observe.events_answer(record))

    def op_metrics(self, request_id: int, message: dict) -> None:
        self.reply(request_id, result=observe.metrics_answer(self.vips.values()))

    def op_add(self, request_id: int, message: dict) -> None:
        ip = message["ip"]
        existing = next((r for r in self.vips.values() if r.ip == ip), None)
        if existing is not None:
            self.reply(request_id, False, status=409, error=f"ip {ip} is already configured on this host as {existing.id}")
            return
        # Counted with the VIPs being deleted: their workers still run until they have let go.
        if len(self.vips) >= self.config.max_vips:
            self.reply(request_id, False, status=409, error=f"this agent has {len(self.vips)} VIPs, the most MAX_VIPS="
                       f"{self.config.max_vips} allows: delete one, or raise MAX_VIPS (each VIP is a process)")
            return
        spec = VipSpec(
            id=f"vip-{uuid.uuid4()}", ip=ip, checks=tuple(message.get("checks") or ()),
            healthcheck_interval=float(message.get("healthcheck_interval") or 0.0),
            fault_policy=message.get("fault_policy") or "",
            priority=message.get("priority"), preempt=message.get("preempt"),
            binder=message.get("binder") or "arp", command=message.get("command"), webhook=message.get("webhook"),
        )
        record = VipRecord(spec=spec, since=time.time())
        try:
            self._persist([*self.vips.values(), record])
        except StoreError as exc:
            self.reply(request_id, False, status=503, error=str(exc))
            return
        self.vips[record.id] = record
        self.spawn_worker(record)
        self._set_title()
        logger.info("added %s as %s", ip, record.id)
        self.reply(request_id, result=self._api(record))

    def op_update(self, request_id: int, message: dict) -> None:
        """Replace a VIP's settings (its health checks) live: persisted, then sent to its worker."""
        record = self._find(request_id, message)
        if record is None:
            return
        changes = {k: message[k] for k in ("checks", "healthcheck_interval", "fault_policy", "priority", "preempt") if k in message}
        spec = VipSpec.from_json({**record.spec.to_json(), **changes})
        try:
            self._persist(self.vips.values(), replace=spec)
        except StoreError as exc:
            self.reply(request_id, False, status=503, error=str(exc))
            return
        record.spec = spec
        if record.conn is not None and not record.conn.closed:
            try:
                record.conn.send({"type": "settings", "spec": spec.to_json()})
            except OSError:
                pass  # the worker is dying; its successor starts with the new spec
        logger.info("updated %s: %d health check(s)", record.ip, len(spec.checks))
        self.reply(request_id, result=self._api(record))

    def op_failover(self, request_id: int, message: dict) -> None:
        record = self._find(request_id, message)
        if record is None:
            return
        if record.conn is None or record.conn.closed or record.worker_state != records.RUNNING:
            self.reply(request_id, False, status=409, error=f"the worker of {record.ip} is not running ({record.worker_state})")
            return
        record.failover_waiters.append(request_id)
        try:
            record.conn.send({"type": "failover", "request": request_id})
        except OSError:
            record.failover_waiters.remove(request_id)
            self.reply(request_id, False, status=503, error=f"the worker of {record.ip} is gone")

    def op_delete(self, request_id: int, message: dict) -> None:
        record = self._find(request_id, message)
        if record is None:
            return
        # Persisted first: a delete that cannot be written (a full disk) changes nothing, rather
        # than unbinding the VIP and revoking its lease while the file still lists it.
        try:
            self._persist(r for r in self.vips.values() if r is not record)
        except StoreError as exc:
            self.reply(request_id, False, status=503, error=str(exc))
            return
        record.delete_waiters.append(request_id)
        if record.pid is not None:
            if record.worker_state != records.STOPPING:
                record.worker_state = records.STOPPING
                record.respawn_at = None
                self._send_stop(record)
            return  # answered when the worker has released the VIP and exited
        self._finish_delete(record)

    def _send_stop(self, record: VipRecord) -> None:
        try:
            if record.conn is not None:
                record.conn.send({"type": "stop"})
                return
        except OSError:
            pass
        if record.pid is not None:
            self.ops.kill(record.pid, signal.SIGTERM)

    def _finish_delete(self, record: VipRecord) -> None:
        # The file no longer lists it (op_delete wrote that before stopping the worker).
        waiters, record.delete_waiters = record.delete_waiters, []
        del self.vips[record.id]
        self._set_title()
        logger.info("deleted %s (%s)", record.ip, record.id)
        for request_id in waiters:
            self.reply(request_id, result=None)

    def _persist(self, vips: Iterable[VipRecord], replace: VipSpec | None = None) -> None:
        """Write the list; `replace` stands for the record of the same id. VIPs whose delete is
        under way are left out: their deletion was written already, and must stay written."""
        specs = []
        for record in vips:
            if record.delete_waiters:
                continue
            specs.append(replace if replace is not None and replace.id == record.id else record.spec)
        self.store.save(specs)
