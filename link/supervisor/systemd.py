"""What the supervisor tells systemd (Type=notify): READY, STATUS, WATCHDOG, RELOADING, STOPPING.

READY=1 once the API process listens and every VIP configured at start has a worker that
booted (sent its first state report) or went FATAL; READY_BOUND seconds after start at the
latest, with STATUS naming what is still not ready, so that one VIP that cannot boot does not
keep the service "activating" until systemd's start timeout kills it. STATUS= is sent when the
line changes. WATCHDOG=1 goes from the supervisor's loop (tick), at half the period systemd
asked for: a loop that stops turning stops the pings, and systemd restarts the agent.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from link.supervisor.records import VipRecord
from link.supervisor.sd_notify import Notifier
from link.supervisor.status_line import EtcdWatch, status_line, worker_state
from link.supervisor.worker_states import WorkerState

logger = logging.getLogger(__name__)

READY_BOUND = 45.0  # seconds; systemd's default start timeout is 90 s
STATUS_EVERY = 1.0  # seconds between two computations of the status line (it walks every VIP)


class SystemdLink:
    def __init__(self, notifier: Notifier, fault_policy: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.fault_policy = fault_policy
        self.clock = clock
        self.started = clock()
        self.ready = False
        self.api_ready = False
        self.waiting: set[str] | None = None  # the VIP ids whose worker has not booted yet
        self.etcd = EtcdWatch()
        self._status = ""
        self._status_at = float("-inf")
        self._ping_at = float("-inf")
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    # -- what the arbiter tells ---------------------------------------------------------------
    def booting(self, vip_ids: Iterable[str]) -> None:
        """The VIPs configured at start: READY waits for their workers."""
        self.waiting = set(vip_ids)

    def worker_booted(self, vip_id: str) -> None:
        if self.waiting is not None:
            self.waiting.discard(vip_id)

    def api_listening(self) -> None:
        if not self.api_ready:
            logger.info("the API process listens")
        self.api_ready = True

    def reloading(self) -> None:
        if self.ready:
            self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self) -> None:
        if self.ready:
            self.notifier.send("READY=1", f"STATUS={self._status}")

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.send("STOPPING=1", "STATUS=stopping: releasing the VIPs")

    # -- every loop turn ------------------------------------------------------------------------
    def tick(self, vips: dict[str, VipRecord]) -> None:
        if not self.notifier.enabled:
            return
        now = self.clock()
        if self.notifier.watchdog is not None and now - self._ping_at >= self.notifier.watchdog / 2:
            self._ping_at = now
            self.notifier.send("WATCHDOG=1")
        if self._stopping or now - self._status_at < STATUS_EVERY:
            return
        self._status_at = now
        self.etcd.note(vips.values(), now)
        line = status_line(vips.values(), self.etcd.verdict(now), self.fault_policy)
        if not self.ready:
            missing = self.not_ready(vips)
            if missing and now - self.started < READY_BOUND:
                self._send_status(f"starting: waiting for {', '.join(missing)}")
                return
            self.ready = True
            if missing:
                line = f"{line}; started without {', '.join(missing)}"
                logger.warning("telling systemd the agent is ready after %.0f s without %s", now - self.started,
                               ", ".join(missing))
            self._status = line
            self.notifier.send("READY=1", f"STATUS={line}")
            return
        self._send_status(line)

    def not_ready(self, vips: dict[str, VipRecord]) -> list[str]:
        missing = [] if self.api_ready else ["the API"]
        pending = [vips[i] for i in sorted(self.waiting or ()) if i in vips and worker_state(vips[i]) != WorkerState.FATAL.value]
        if self.waiting is not None:
            self.waiting = {r.id for r in pending}
        if pending:
            shown = ", ".join(r.ip for r in pending[:3]) + (f" and {len(pending) - 3} more" if len(pending) > 3 else "")
            missing.append(f"the worker{'s' if len(pending) > 1 else ''} of {shown}")
        return missing

    def _send_status(self, line: str) -> None:
        if line != self._status:
            self._status = line
            self.notifier.send(f"STATUS={line}")
