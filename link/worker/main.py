"""The body of one worker process: one VIP, its election, its address and its announcements.

Runs in a child forked by the supervisor. Everything that opens a socket or starts a thread
(etcd client, watch, netlink, AF_PACKET) is created here, after the fork.
"""
from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import time
from multiprocessing.connection import Connection
from typing import NoReturn

from setproctitle import setproctitle

from link import logs
from link.config import Config
from link.scripts import ProgramPolicy
from link.vip import VipSpec
from link.worker.announce import Announcer
from link.worker.binders import Binder, make_binder
from link.worker.election import CycleResult, Election
from link.worker.etcd_grpc import GrpcEtcd
from link.worker.etcd_port import EtcdError
from link.worker.fsm import Event, State, StateMachine
from link.worker.health import HealthJudge, HealthMonitor
from link.worker.metrics import WorkerMetrics
from link.worker.supervisor_link import SupervisorLink
from link.worker.warn_throttle import WarningThrottle

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BOOT_FAILED = 3
PR_SET_PDEATHSIG = 1
BINDER_STOP_WAIT = 5.0  # at stop, the longest a command/webhook binder's deactivate is waited for
TRUSTED_CYCLES = 8  # cycles in a row that may trust the watch instead of reading the lock


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so the VIP is released.

    The pipe's EOF says the same thing; this covers a worker busy in a long etcd call.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class Worker(SupervisorLink):
    def __init__(self, config: Config, spec: VipSpec, conn: Connection) -> None:
        self.config = config
        self.spec = spec
        self.vip = spec.ip
        self.conn = conn
        self.fault_policy = spec.fault_policy or config.fault_policy
        self.stopping = ""
        self.holder: str | None = None
        self.last_event: Event | None = None
        self.hold_off_until = 0.0  # after a hand-over: leave the free lock to the others until then
        self._lock_changed = False  # set by the watch thread: run a cycle now
        self._lock_dirty = True  # the lock may have changed since the last read
        self._trusted_reads = 0  # cycles in a row that trusted the watch instead of reading
        self.warnings = WarningThrottle()  # an etcd outage: one warning per 30 s, not one per tick
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.fsm = StateMachine(
            on_enter={State.ACTIVATED: self._enter_activated, State.STANDBY: self._enter_standby, State.FAILING: self._enter_failing},
            label=f"{self.vip} ",
        )
        self.health = HealthMonitor(list(spec.checks), self._check_interval(spec), config.health_check_timeout, self._wake,
                                    ProgramPolicy.from_config(config), label=self.vip)
        self.judge = HealthJudge(config.fail_count_before_failover)
        self.metrics = WorkerMetrics()
        self._reported_state: str | None = None  # the `from` of the next transition report
        self.binder: Binder | None = None  # how the VIP is put in place (link.worker.binders)
        self.announcer: Announcer | None = None  # the arp binder's, for the metrics
        self._binder_reported: dict | None = None
        self.etcd: GrpcEtcd | None = None
        self.election: Election | None = None

    # -- life -------------------------------------------------------------------------------
    def boot(self) -> None:
        """Open what the VIP needs on this host; an exception here is a boot failure."""
        self.binder = make_binder(self.config, self.spec, self._wake, self._priority)
        self.announcer = getattr(self.binder, "announcer", None)

    def _priority(self) -> int:
        if self.election is not None:
            return self.election.priority
        return self.config.priority if self.spec.priority is None else self.spec.priority

    def _check_interval(self, spec: VipSpec) -> float:
        return spec.healthcheck_interval or self.config.health_check_interval

    def start_election(self) -> None:
        # Not a boot failure if etcd is down: the cycle counts failures and faults (LinK's rule).
        self.etcd = GrpcEtcd.from_config(self.config)
        self.election = Election(
            self.etcd, self.vip, self.config.hostname, self.config.lease_ttl, self.config.keepalive_retry,
            priority=self.config.priority if self.spec.priority is None else self.spec.priority,
            preempt=self.config.preempt if self.spec.preempt is None else self.spec.preempt,
            preempt_delay=self.config.preempt_delay, grace=self.config.tick,
        )
        self.election.watch(self._on_lock_change)
        self.health.start()

    def _on_lock_change(self) -> None:
        self._lock_dirty = True  # the next cycle reads the lock instead of trusting the last read
        self._lock_changed = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # already awake

    def request_stop(self, why: str) -> None:
        if not self.stopping:
            self.stopping = why
        self._wake()

    def run(self) -> None:
        assert self.election is not None and self.binder is not None
        next_cycle = time.monotonic()
        self._report()
        # One selector for the worker's life: multiprocessing's wait() builds and tears down
        # a new one on every call, a cost paid on every tick of every idle VIP.
        with selectors.DefaultSelector() as selector:
            selector.register(self.conn, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self.stopping:
                due = min(next_cycle, self.binder.next_due() or next_cycle)
                ready = {key.fileobj for key, _ in selector.select(max(0.0, due - time.monotonic()))}
                if self.conn in ready:
                    self._read_commands()
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    if self._lock_changed:
                        self._lock_changed = False
                        next_cycle = time.monotonic()  # the lock changed: look now, not at the next tick
                if self.stopping:
                    break
                self._judge_health()
                now = time.monotonic()
                if now >= next_cycle:
                    # Due work first (the address lifetime): a cycle may wait on a slow etcd.
                    self.binder.run_due()
                    self.cycle()
                    next_cycle = now + self.config.tick
                self.binder.run_due()
                self._report_binder()
                if self.metrics.due():
                    self._send_metrics()

    def _judge_health(self) -> None:
        for results in self.health.take_results():
            self.metrics.health_round(results)
            event, reason = self.judge.judge(results)
            if reason:
                logger.log(logging.WARNING if event or not all(r.ok for r in results) else logging.INFO, "%s: %s", self.vip, reason)
            if event is not None and self.fsm.handle(event, reason):
                if self.fsm.state is State.FAILING:
                    self.holder = None
                self._report(event, reason)

    def _apply_fault_policy(self, result: CycleResult) -> CycleResult:
        """FAULT_POLICY turns a `fault` into LinK's rule (activate), nothing (keep) or a release."""
        if result.event is not Event.FAULT or self.fault_policy == "activate":
            return result
        if self.fault_policy == "keep":
            return CycleResult(None, f"{result.sentence}; keeping the current state (fault policy keep)", result.holder)
        return CycleResult(Event.DEMOTED, f"{result.sentence}; releasing the VIP (fault policy release)", None)

    def cycle(self) -> None:
        assert self.election is not None
        eligible = self.fsm.state is not State.FAILING and time.monotonic() >= self.hold_off_until
        # An idle VIP only refreshes its lease while the watch vouches for the lock; it still
        # reads the lock every TRUSTED_CYCLES + 1 cycles (three leases), should a watch ever
        # miss a change. Each read is an etcd request: at hundreds of VIPs they add up.
        trust = (self.etcd is not None and self.etcd.watch_healthy and not self._lock_dirty
                 and self._trusted_reads < TRUSTED_CYCLES)
        self._lock_dirty = False
        self._trusted_reads = self._trusted_reads + 1 if trust else 0
        result = self._apply_fault_policy(
            self.election.run_cycle(eligible=eligible, state=self.fsm.state.value, lock_unchanged=trust))
        if result.hand_over:
            self._log_cycle(result)
            self._step_down(result.sentence)
            return
        changed = False
        if result.event is not None:
            if result.holder != self.holder:
                self.holder, changed = result.holder, True
            recovered = self.last_event is Event.FAULT and result.event is Event.ELECTED
            self.last_event = result.event
            if self.fsm.handle(result.event, result.sentence):
                changed = True
            elif recovered and self.fsm.state is State.ACTIVATED:
                # We held the VIP through the outage and won the lock when etcd came back:
                # peers that also held it may have poisoned neighbour caches, announce again.
                logger.info("%s: etcd is back and this host holds the lock: announcing again", self.vip)
                self._ensure_bound(force_announce=True)
        self._log_cycle(result)
        if self.fsm.state is State.ACTIVATED:
            self._ensure_bound()
        if changed:
            self._report(result.event, result.sentence)

    def _log_cycle(self, result: CycleResult) -> None:
        troubled = result.event is Event.FAULT or (result.event is None and "etcd" in result.sentence)
        if not troubled:
            held = self.warnings.clear()
            if held is not None:
                logger.info("%s %s: etcd answers again (%d more warnings since the last one logged)",
                            self.vip, self.fsm.state.value, held)
            logger.debug("%s %s: %s", self.vip, self.fsm.state.value, result.sentence)
            return
        loud, held = self.warnings.trouble()
        if loud:
            more = f" ({held} similar warnings in the last {self.warnings.every:.0f} s not logged)" if held else ""
            logger.warning("%s %s: %s%s", self.vip, self.fsm.state.value, result.sentence, more)
        else:
            logger.debug("%s %s: %s", self.vip, self.fsm.state.value, result.sentence)

    def _step_down(self, reason: str) -> None:
        """Hand the VIP over: unbind, then free the lock, then stay aside for two lease
        periods — long enough for a standby to take it, short enough that the VIP comes back
        here if none does (at least one host must bind it)."""
        assert self.election is not None
        self.hold_off_until = time.monotonic() + 2 * self.config.lease_ttl
        self.holder = None
        self.fsm.handle(Event.DEMOTED, reason)
        logger.info("%s: %s", self.vip, self.election.give_up_lock())
        self._report(Event.DEMOTED, reason)

    def _publish(self) -> None:
        if self.election is None:
            return
        try:
            self.election.publish(self.fsm.state.value)
        except EtcdError as exc:
            logger.debug("%s: could not publish state: %s (retried next cycle)", self.vip, exc)

    # -- enter-actions ----------------------------------------------------------------------
    def _enter_activated(self, old: State, event: Event, reason: str) -> None:
        self._ensure_bound(force_announce=True, reason=reason)

    def _enter_standby(self, old: State, event: Event, reason: str) -> None:
        self._unbind(State.STANDBY, reason)

    def _enter_failing(self, old: State, event: Event, reason: str) -> None:
        self._unbind(State.FAILING, reason)
        assert self.election is not None
        logger.info("%s: %s", self.vip, self.election.give_up_lock())

    def _ensure_bound(self, force_announce: bool = False, reason: str = "") -> None:
        """force_announce: put the VIP in place (again) now; else only if it went away.
        The command and webhook binders only queue their action: nothing here waits on them."""
        assert self.binder is not None
        if force_announce:
            self.binder.activate(reason or "asserting the VIP again")
        else:
            self.binder.ensure()

    def _unbind(self, state: State = State.STANDBY, reason: str = "") -> None:
        assert self.binder is not None
        self.binder.deactivate(state.value, reason)

    def shutdown(self) -> None:
        """Leave cleanly: unbind first, then give the lock up, so no two hosts hold it."""
        logger.info("%s: stopping (%s)", self.vip, self.stopping)
        self.health.stop()
        if self.binder is not None:
            try:
                self._unbind(State.STANDBY, f"stopping: {self.stopping}")
            except Exception:
                logger.exception("%s: could not unbind", self.vip)
            # A command or webhook binder gets one last attempt at its deactivate (bounded)
            # before the lock is given up; the arp binder is done already.
            self.binder.close(wait=BINDER_STOP_WAIT)
        if self.election is not None:
            logger.info("%s: %s", self.vip, self.election.resign())
        for closable in (self.etcd,):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    logger.debug("closing %r failed", closable, exc_info=True)


def worker_main(config: Config, spec: VipSpec, conn: Connection, parent_pid: int) -> NoReturn:
    """Entry point in the forked child; never returns."""
    code = EXIT_OK
    vip = spec.ip
    try:
        logs.setup(config.logger_level, f"worker {vip}", fmt=config.logger_type, vip=vip)
        setproctitle(f"link: vip {vip} BOOTING")
        worker = Worker(config, spec, conn)
        signal.signal(signal.SIGTERM, lambda *_: worker.request_stop("SIGTERM"))
        # Ctrl-C reaches the whole process group: the supervisor orders the hand-over.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent(parent_pid)
        try:
            worker.boot()
        except Exception as exc:
            logger.error("%s: cannot put the VIP in place on this host: %s", vip, exc)
            try:
                conn.send({"type": "boot_failed", "error": str(exc)})
            except OSError:
                pass
            worker.shutdown()
            code = EXIT_BOOT_FAILED
        else:
            try:
                worker.start_election()
                worker.run()
            finally:
                worker.shutdown()
    except BaseException:
        logging.getLogger(__name__).exception("worker for %s crashed", vip)
        code = 1
    finally:
        logging.shutdown()
    os._exit(code)
