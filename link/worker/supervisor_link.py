"""The worker's side of its pipe to the supervisor: the commands it receives (stop, new
settings, log level, priority, candidates, failover) and the reports it sends (state,
binder status, metrics). Mixed into the Worker, whose state these methods read and change.
"""
from __future__ import annotations

import logging
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from setproctitle import setproctitle

from link import logs
from link.vip import VipSpec
from link.worker.etcd_port import EtcdError
from link.worker.fsm import Event, State

if TYPE_CHECKING:
    from link.worker.main import Worker

logger = logging.getLogger(__name__)


class SupervisorLink:
    conn: Connection

    def _read_commands(self: Worker) -> None:
        try:
            while self.conn.poll():
                message = self.conn.recv()
                if message.get("type") == "stop":
                    self.request_stop("asked by the supervisor")
                elif message.get("type") == "settings":
                    self._replace_checks(message)
                elif message.get("type") == "log_level":
                    logs.set_level(message["level"])
                elif message.get("type") == "priority":
                    self._set_priority(int(message["priority"]))
                elif message.get("type") == "candidates":
                    self.conn.send({"type": "candidates_done", "request": message["request"], **self._candidates()})
                elif message.get("type") == "failover":
                    status, error = self._hand_over()
                    self.conn.send({"type": "failover_done", "request": message["request"], "status": status, "error": error})
        except (EOFError, OSError):
            self.request_stop("the supervisor is gone")

    def _hand_over(self: Worker) -> tuple[int, str]:
        """POST /ips/<id>/failover: give the VIP to another host. Returns (HTTP status, error).

        Unbind first, then free the lock: there is never a moment with two holders, and the
        standbys' watch fires on the delete, so the moment with none is a few milliseconds.
        """
        assert self.election is not None
        if self.fsm.state is not State.ACTIVATED:
            held_by = f"; {self.holder} holds it" if self.holder and self.holder != self.config.hostname else ""
            return 409, f"this host does not hold {self.vip} (it is {self.fsm.state.value}{held_by}): ask the holder"
        try:
            others = self.election.competitors()
        except EtcdError as exc:
            return 503, f"cannot ask etcd which hosts compete for {self.vip}: {exc}"
        if not others:
            return 409, f"no other host competes for {self.vip}: nobody would take it over"
        self._step_down(f"failover requested: handing over to {' or '.join(others)}")
        return 204, ""

    def _set_priority(self: Worker, host_priority: int) -> None:
        """The host's priority changed (SIGUSR1/SIGUSR2/SIGHUP); a VIP's own priority wins."""
        assert self.election is not None
        if self.spec.priority is not None or self.election.priority == host_priority:
            return
        logger.info("%s: priority %d -> %d", self.vip, self.election.priority, host_priority)
        self.election.priority = host_priority
        self._report(None, f"priority is now {host_priority}")
        self._lock_changed = True  # judge the election again with the new priority now
        self._wake()

    def _candidates(self: Worker) -> dict:
        assert self.election is not None
        try:
            return {"candidates": [c.to_api() for c in self.election.candidates()], "error": ""}
        except EtcdError as exc:
            return {"candidates": [], "error": f"cannot read the candidates from etcd: {exc}"}

    def _replace_checks(self: Worker, message: dict) -> None:
        """New checks apply at once; the VIP stays bound while they pass."""
        self.spec = VipSpec.from_json({**self.spec.to_json(), **message["spec"]})
        self.health.replace(list(self.spec.checks), self._check_interval(self.spec))
        if not self.spec.checks and self.judge.failing:
            self.judge.reset()
            self.fsm.handle(Event.HEALTH_CHECK_SUCCESS, "health checks removed")
            self._report(Event.HEALTH_CHECK_SUCCESS, "health checks removed")
        logger.info("%s: health checks replaced (%d check(s))", self.vip, len(self.spec.checks))

    # -- reporting --------------------------------------------------------------------------
    def _report_binder(self: Worker) -> None:
        """Tell the supervisor when the binder's status changed (its thread wakes the loop)."""
        status = self.binder.status() if self.binder is not None else None
        if status == self._binder_reported:
            return
        self._binder_reported = status
        try:
            self.conn.send({"type": "binder", "binder_status": status})
        except (BrokenPipeError, OSError):
            self.request_stop("the supervisor is gone")

    # -- reporting --------------------------------------------------------------------------
    def _report(self: Worker, event: Event | None = None, reason: str = "") -> None:
        state = self.fsm.state.value
        self._publish()
        setproctitle(f"link: vip {self.vip} {state}")
        previous, self._reported_state = self._reported_state, state
        if previous is not None and previous != state:
            self.metrics.transition(event.value if event else None)
        try:
            self.conn.send(
                {"type": "state", "state": state, "event": event.value if event else None,
                 "since": self.fsm.since, "holder": self.holder, "reason": reason,
                 "priority": self.election.priority if self.election else None,
                 "from": previous, "metrics": self._metrics_snapshot(),
                 "binder_status": self._binder_status_for_report()}
            )
        except (BrokenPipeError, OSError):
            self.request_stop("the supervisor is gone")

    def _binder_status_for_report(self: Worker) -> dict | None:
        self._binder_reported = self.binder.status() if self.binder is not None else None
        return self._binder_reported

    def _metrics_snapshot(self: Worker) -> dict:
        return self.metrics.snapshot(self.etcd.stats.snapshot() if self.etcd else None,
                                     self.announcer.packets if self.announcer else 0,
                                     self.election.counters() if self.election else None)

    def _send_metrics(self: Worker) -> None:
        try:
            self.conn.send({"type": "metrics", "metrics": self._metrics_snapshot()})
        except (BrokenPipeError, OSError):
            self.request_stop("the supervisor is gone")
