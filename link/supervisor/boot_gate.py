"""The boot gate: workers are forked at a bounded rate, with a bounded number booting at once.

Measured (BENCHMARKS.md, "Overload under arbitrate"): at 200-300 VIPs per 2-core host, hundreds
of workers forked together each load gRPC and scapy and campaign at the same moment; etcd and
the supervisors starve, workers that were only slow look hung and are replaced, which adds
more boots. So every start (a POST, the agent's start with its STATE_DIR, a respawn after
BACKOFF or FATAL) goes through here:

* a VIP due to start waits in a queue, in order of arrival (worker state QUEUED; its VIP
  status stays BOOTING, so the API answers at once and reads as it always did);
* at most BOOT_CONCURRENCY workers are booting: forked, and no state report out of BOOTING
  yet (its first election cycle decides one). A slot is freed by that report, by the
  worker's exit, or BOOT_SILENCE after the fork, whichever comes first: a worker that stays
  BOOTING (etcd unreachable) must not block the queue for good;
* forks are spaced by a token bucket of BOOT_RATE per second, holding one second's worth,
  so a burst after an idle spell is at most BOOT_RATE forks (and never more than the slots).

A queued VIP has no process: the hung watchdog does not look at it (it watches RUNNING
workers, whose silence is counted from their fork), and a DELETE removes it from the queue
without a fork (its record leaves `vips`; the queue drops what is no longer there).
"""
from __future__ import annotations

import collections
import logging
from typing import Callable, Mapping

from link.supervisor.lifecycle import BOOT_SILENCE
from link.supervisor.records import VipRecord
from link.supervisor.worker_states import WorkerState
from link.vocabulary.vip_states import State

logger = logging.getLogger(__name__)


class BootGate:
    def __init__(self, concurrency: int, rate: float, clock: Callable[[], float],
                 vips: Mapping[str, VipRecord], fork: Callable[[VipRecord], None]) -> None:
        self.concurrency = concurrency
        self.rate = rate
        self.clock = clock
        self._vips = vips  # the arbiter's: a VIP deleted while it waited is no longer there
        self._fork = fork
        self.queue: collections.deque[VipRecord] = collections.deque()
        self.booting: dict[str, float] = {}  # VIP id -> when its slot ends at the latest (fork + BOOT_SILENCE)
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._filled_at = clock()

    def add(self, record: VipRecord) -> None:
        """A start is due: the record (already QUEUED) waits its turn."""
        self.queue.append(record)

    def booted(self, record: VipRecord) -> None:
        """A state report: the slot is free once the worker is out of BOOTING."""
        if record.status != State.BOOTING.value:
            self.booting.pop(record.id, None)

    def gone(self, record: VipRecord) -> None:
        """The worker exited: its slot is free."""
        self.booting.pop(record.id, None)

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now

    def _free_slots(self, now: float) -> int:
        for vip_id in [i for i, until in self.booting.items() if now >= until]:
            logger.info("%s: still booting %.0f s after its fork: its boot slot goes to the next VIP",
                        vip_id, BOOT_SILENCE)
            del self.booting[vip_id]
        return self.concurrency - len(self.booting)

    def pump(self, stopping: bool = False) -> int:
        """Fork what the slots and the rate allow now, oldest first; the number forked."""
        if stopping or not self.queue:
            return 0
        now = self.clock()
        self._refill(now)
        forked = 0
        for _ in range(len(self.queue)):  # each turn pops one: bounded by the queue's length
            if self._tokens < 1.0 or self._free_slots(now) <= 0:
                break
            record = self.queue.popleft()
            if self._vips.get(record.id) is not record or record.worker_state is not WorkerState.QUEUED:
                continue  # deleted or stopped while it waited: never forked
            self._tokens -= 1.0
            self.booting[record.id] = now + BOOT_SILENCE
            self._fork(record)
            forked += 1
        return forked

    def next_due(self) -> float | None:
        """When the loop should wake to fork the next queued VIP (None: nothing waits). With every
        slot taken: when the first slot runs out (a report or an exit may free one sooner, and
        wakes the loop itself)."""
        if not self.queue:
            return None
        if len(self.booting) >= self.concurrency:
            return min(self.booting.values())
        return self._filled_at + max(0.0, 1.0 - self._tokens) / self.rate

    def waiting(self) -> int:
        return sum(1 for r in self.queue if self._vips.get(r.id) is r and r.worker_state is WorkerState.QUEUED)
