"""A worker process's life as the supervisor sees it: the one setter of `worker_state`, what
follows a worker's exit (respawn with backoff, or FATAL), and the watchdog that replaces a
hung worker (gunicorn's timeout).

A worker that cannot boot its VIP several times in a row is marked FATAL instead of being
respawned at once, and tried again after FATAL_RETRY (minutes): what made it fail (an
interface missing, a bad value in etcd) may be gone by then, and a VIP must not stay down for
good on every host.

`change` is the only place `VipRecord.worker_state` changes: it looks the next state up in
`worker_states.TRANSITIONS`, logs `OLD -> NEW`, and records the VIP event people see
(`GET /ips/<id>/events`) when the caller names one.

A worker sends something up at least once per lease: its reports, or a `heartbeat` from its
main loop's tick when it has sent nothing else for a lease. One that sends nothing for
`hung_timeout` (HUNG_LEASES leases, at least HUNG_MIN seconds; BOOT_SILENCE before its first
message) is hung: stopped by SIGSTOP, a debugger or a deadlock, or stuck in a call that never
returns. Its main loop refreshes its lease, so peers take the VIP one TTL after the last
refresh; replacing it makes this host a candidate again. SIGTERM first, so that a worker
whose Python code can still run releases what it holds (unbind, lease revoked), then SIGKILL
one lease later if it has not exited. The supervisor has no etcd client (it forks), so a
killed worker's lease simply expires. The arp binder's address has a lifetime of one lease and
goes by itself; whatever is left on the interface is removed when the killed process is
reaped, before the respawn (`Arbiter.child_exited`).
"""
from __future__ import annotations

import logging
import random
import signal
import time
from typing import Callable, Iterable

from link.vocabulary.exit_codes import WORKER_BOOT_FAILED
from link.supervisor import observe
from link.supervisor.ops import ProcessOps
from link.supervisor.records import VipRecord
from link.supervisor.worker_states import TRANSITIONS, WorkerEvent, WorkerState
from link.vocabulary.vip_states import State

logger = logging.getLogger(__name__)

BOOT_WINDOW = 5.0  # a worker dying sooner than this after its start failed to boot
MAX_BOOT_FAILURES = 5  # then FATAL (Supervisor's startretries)
FATAL_RETRY = 300.0  # seconds (±20 % jitter) before a FATAL worker is tried again, once per period
HUNG_LEASES = 3  # leases without a message from a worker before it is replaced
HUNG_MIN = 5.0  # seconds, at least: a short lease on a loaded host must not look like a hang
# A worker that has said nothing yet is still booting: hundreds forked at once (agent start)
# each load gRPC and scapy first, which on a busy host takes far longer than a lease.
BOOT_SILENCE = 30.0
WATCH_EVERY = 1.0  # seconds between two looks at the workers' last messages
# How loud a change is: a worker that died, hung or keeps failing is news for the operator.
LOUDNESS = {WorkerState.BACKOFF: logging.WARNING, WorkerState.HUNG: logging.ERROR, WorkerState.FATAL: logging.ERROR}


def backoff_delay(failures: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """0.1 s after a crash of a worker that ran fine, doubling per failed boot, capped at 30 s,
    with ±25 % jitter so many failing VIPs do not respawn in lockstep."""
    return min(30.0, 0.1 * (2.0 ** failures)) * rng(0.75, 1.25)


def fatal_retry_delay(rng: Callable[[float, float], float] = random.uniform) -> float:
    """FATAL_RETRY with ±20 % jitter: VIPs that went FATAL together are not retried together."""
    return FATAL_RETRY * rng(0.8, 1.2)


def hung_timeout(lease_ttl: float) -> float:
    """How long a RUNNING worker may stay silent before it is replaced."""
    return max(HUNG_MIN, HUNG_LEASES * lease_ttl)


def change(record: VipRecord, event: WorkerEvent, reason: str, *, note: str | None = None,
           frm: str | None = None) -> bool:
    """Apply `event` to the record's worker; True when the state changed. `note`: the name of
    the VIP event to record (`frm`: the VIP status it is recorded from, when not the current)."""
    old = record.worker_state
    new = TRANSITIONS.get((old, event))
    if new is None:
        logger.error("%s: worker %s on %s: not a transition of the worker's lifecycle (%s)", record.ip, old.value,
                     event.value, reason)
        return False
    if note is not None:
        observe.add_event(record, record.status, note, reason, frm=frm)
    if new is old:
        return False
    record.worker_state = new
    logger.log(LOUDNESS.get(new, logging.INFO), "%s: worker %s -> %s on %s: %s", record.ip, old.value, new.value,
               event.value, reason)
    return True


def crashed(record: VipRecord, pid: int, code: int, now: float) -> None:
    """A worker exited that nobody told to stop: BACKOFF with a respawn time, or FATAL after
    MAX_BOOT_FAILURES failed boots in a row (and at once again when a FATAL retry fails)."""
    ran = now - record.started_at
    hung = record.worker_state is WorkerState.HUNG
    if code == WORKER_BOOT_FAILED or ran < BOOT_WINDOW:
        record.boot_failures += 1
        record.error = record.boot_error or f"worker exited with {code} after {ran:.1f}s"
    else:
        record.boot_failures = 0
        record.error = f"worker exited with {code} after {ran:.0f}s" + (" (hung)" if hung else "")
    record.restarts += 1
    was = record.status
    record.status, record.holder, record.since = State.BOOTING.value, None, time.time()
    if record.boot_failures >= MAX_BOOT_FAILURES:
        # boot_failures stays at the maximum: a retry that fails too is FATAL again at once.
        delay = fatal_retry_delay()
        record.respawn_at = now + delay
        change(record, WorkerEvent.GAVE_UP, f"worker {pid} failed to boot {record.boot_failures} times "
               f"({record.error}); retrying in {delay:.0f} s", note="worker_fatal", frm=was)
        return
    delay = backoff_delay(record.boot_failures)
    record.respawn_at = now + delay
    change(record, WorkerEvent.EXITED, f"worker {pid} exited ({record.error}); respawning in {delay:.2f}s",
           note="worker_exited", frm=was)


class Watchdog:
    """Finds the RUNNING workers that fell silent and replaces them (SIGTERM, then SIGKILL)."""

    def __init__(self, ops: ProcessOps, lease_ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ops = ops
        self.clock = clock
        self.timeout = hung_timeout(lease_ttl)
        self.grace = float(lease_ttl)  # between SIGTERM and SIGKILL: a responsive worker releases by then
        self._next_look = 0.0

    def _silent(self, record: VipRecord, now: float) -> bool:
        if record.heard_at is None:
            return now - record.started_at >= max(self.timeout, BOOT_SILENCE)
        return now - record.heard_at >= self.timeout

    def check(self, records: Iterable[VipRecord]) -> None:
        """Called every loop turn; looks at most every WATCH_EVERY seconds (hundreds of VIPs)."""
        now = self.clock()
        if now < self._next_look:
            return
        self._next_look = now + WATCH_EVERY
        for record in records:
            if record.pid is None:
                continue
            if record.kill_at is not None and now >= record.kill_at:
                logger.error("%s: worker %d did not exit %.0f s after SIGTERM: SIGKILL", record.ip, record.pid, self.grace)
                record.kill_at = None  # reaped (and respawned) like any dead worker
                self.ops.kill(record.pid, signal.SIGKILL)
            elif record.worker_state is WorkerState.RUNNING and self._silent(record, now):
                last = record.started_at if record.heard_at is None else record.heard_at
                since = "it started" if record.heard_at is None else "its last message"
                reason = (f"worker {record.pid} sent nothing for {now - last:.1f} s since {since}: "
                          f"SIGTERM, SIGKILL in {self.grace:.0f} s, then respawned")
                change(record, WorkerEvent.SILENT, reason, note="worker_hung")
                record.kill_at = now + self.grace
                self.ops.kill(record.pid, signal.SIGTERM)
