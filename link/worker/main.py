"""The body of one worker process: one VIP, its election, its address and its announcements.

Runs in a child forked by the supervisor. Its seams (the etcd port, the binder, the clock) are
given to it: link.worker.entry wires the real ones after the fork, unit tests fakes.
Its pipe to the supervisor is a SupervisorChannel it holds: the commands it gets are handled
by its SupervisorCommands (link.worker.commands), and it reports its state, its binder's
status and its numbers through the channel.
"""
from __future__ import annotations

import logging
import os
import selectors
from multiprocessing.connection import Connection
from typing import Any, Callable

from setproctitle import setproctitle

from link.config import Config
from link.vocabulary.protocol import BinderReport, MetricsReport, StateReport
from link.scripts import ProgramPolicy
from link.vocabulary.vip import VipSpec
from link.worker.binders import Binder, BinderFactory
from link.worker.carrier import CarrierTracker, LinkWatchFactory
from link.worker.commands import SupervisorCommands
from link.worker.claim_guard import ClaimGuard, peers_by_mac
from link.worker.election import CycleResult, Election
from link.worker.follow import make_election
from link.etcd.port import EtcdError, EtcdPort
from link.vocabulary.fault_policies import FaultPolicy
from link.vocabulary.vip_states import Event, State
from link.worker.fsm import StateMachine
from link.worker.health import HealthJudge, HealthMonitor
from link.worker.metrics import WorkerMetrics
from link.worker.notify import Notifier
from link.worker.supervisor_link import SupervisorChannel
from link.worker.wire_policy import WirePolicy
from link.warn_throttle import WarningThrottle

logger = logging.getLogger(__name__)

BINDER_STOP_WAIT = 5.0  # at stop, the longest a command/webhook binder's deactivate is waited for
TRUSTED_CYCLES = 8  # cycles in a row that may trust the watch instead of reading the lock


class Worker:
    def __init__(self, config: Config, spec: VipSpec, conn: Connection, *, etcd: EtcdPort, binder: BinderFactory,
                 clock: Callable[[], float], links: LinkWatchFactory | None = None) -> None:
        """`etcd` is first used by start_election (etcd down is no boot failure); `binder` is
        called by boot() with this worker's wake and priority (a failure there is one), as is
        `links` with the interfaces to track (None: none tracked)."""
        self.config = config
        self.clock = clock
        self.spec = spec
        self.vip = spec.ip
        self.commands = SupervisorCommands(self)  # what each command from the supervisor does
        self.link = SupervisorChannel(conn, self.commands.table(), self.request_stop)
        self.fault_policy = spec.fault_policy or config.fault_policy
        self.wire = WirePolicy(config.hostname, config.interface, spec.ip, clock)  # FAULT_POLICY=arbitrate
        self.stopping = ""
        self.holder: str | None = None
        self.last_event: Event | None = None
        self.hold_off_until = 0.0  # after a hand-over: leave the free lock to the others until then
        self._lock_changed = False  # set by the watch thread: run a cycle now
        self._lock_dirty = True  # the lock may have changed since the last read
        self._trusted_reads = 0  # cycles in a row that trusted the watch instead of reading
        self.warnings = WarningThrottle(clock=clock)  # an etcd outage: one warning per 30 s, not one per tick
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.notifier = Notifier(config, lambda: self.spec, self._wake)  # notify programs, off the loop's path
        self.fsm = StateMachine(
            on_enter={State.ACTIVATED: self._enter_activated, State.STANDBY: self._enter_standby, State.FAILING: self._enter_failing},
            label=f"{self.vip} ", on_change=self.notifier.changed,
        )
        self.health = HealthMonitor(list(spec.checks), self.check_interval(spec), config.health_check_timeout, self._wake,
                                    ProgramPolicy.from_config(config), label=self.vip)
        self.judge = HealthJudge(config.fail_count_before_failover)
        self.metrics = WorkerMetrics(clock=clock)
        self._reported_state: str | None = None  # the `from` of the next transition report
        self._make_binder = binder
        self.binder: Binder | None = None  # how the VIP is put in place (link.worker.binders)
        self._make_links = links
        self.carrier: CarrierTracker | None = None  # TRACK_INTERFACES (link.worker.carrier)
        self._binder_reported: dict[str, Any] | None = None
        self.etcd = etcd
        self.election: Election | None = None
        self.claims = ClaimGuard(self.vip, config.interface, self.link.send, self._metrics_snapshot,  # others' claims
                                 lambda: peers_by_mac(etcd, config.hostname), clock)

    # -- life -------------------------------------------------------------------------------
    def boot(self) -> None:
        """Open what the VIP needs on this host; an exception here is a boot failure."""
        self.binder = self._make_binder(self._wake, self._priority)
        self.claims.use(self.binder)
        if self._make_links is not None and self.config.track_interfaces:
            self.carrier = CarrierTracker(self._make_links(self.config.track_interfaces), label=self.vip)
            self.carrier.start()  # the state at boot: without carrier, FAILING before any election

    def _priority(self) -> int:
        if self.election is not None:
            return self.election.priority
        return self.config.priority if self.spec.priority is None else self.spec.priority

    def check_interval(self, spec: VipSpec) -> float:
        return spec.healthcheck_interval or self.config.health_check_interval

    def start_election(self) -> None:
        # Not a boot failure if etcd is down: the cycle counts failures and faults (LinK's rule).
        # LinK's election on the VIP's lock, or a leader key followed (link.worker.follow).
        self.election = make_election(self.etcd, self.spec, self.config, self.clock)
        self.election.watch(self._on_lock_change)
        self.health.start()

    def _on_lock_change(self) -> None:
        self._lock_dirty = True  # the next cycle reads the lock instead of trusting the last read
        self.look_now()

    def look_now(self) -> None:
        """Run an election cycle now rather than at the next tick."""
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
        next_cycle = self.clock()
        self.report()
        # One selector for the worker's life: multiprocessing's wait() builds and tears down
        # a new one on every call, a cost paid on every tick of every idle VIP.
        with selectors.DefaultSelector() as selector:
            selector.register(self.link, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            self.claims.attach(selector)  # a claim on the wire wakes the loop
            self.wire.attach(selector)  # and, during an outage, an answer for the VIP
            if self.carrier is not None:
                selector.register(self.carrier, selectors.EVENT_READ)  # a tracked link changed
                self._judge_carrier()
            while not self.stopping:
                due = min(next_cycle, self.binder.next_due() or next_cycle, self.claims.next_due() or next_cycle,
                          self.wire.next_due() or next_cycle)
                ready = {key.fileobj for key, _ in selector.select(max(0.0, due - self.clock()))}
                if self.link in ready:
                    self.link.read()
                if self._wake_r in ready:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    if self._lock_changed:
                        self._lock_changed = False
                        next_cycle = self.clock()  # the lock changed: look now, not at the next tick
                if self.stopping:
                    break
                if self.carrier is not None and self.carrier in ready:
                    self._judge_carrier()  # before anything that could bind the VIP again
                self._judge_health()
                now = self.clock()
                if now >= next_cycle:
                    # Due work first (the address lifetime): a cycle may wait on a slow etcd.
                    self.binder.run_due()
                    self.cycle()
                    next_cycle = now + self.config.tick
                    self.link.heartbeat(self.config.lease_ttl)
                elif self.wire.due(now):
                    self.cycle(wire_only=True)  # during an outage: the wire decides now, no etcd call to wait for
                self.binder.run_due()
                self.claims.run_due(self.fsm.state is State.ACTIVATED)
                self._report_binder()
                self.notifier.deliver(self.metrics, self.link.send, self._metrics_snapshot)
                if self.metrics.due():
                    self._send_metrics()

    def _judge_health(self) -> None:
        for results in self.health.take_results():
            self.metrics.health_round(results)
            event, reason = self.judge.judge(results)
            if reason:
                logger.log(logging.WARNING if event or not all(r.ok for r in results) else logging.INFO, "%s: %s", self.vip, reason)
            if event is Event.HEALTH_CHECK_SUCCESS:
                self.recover(event, reason)
            elif event is not None:
                self._fail(event, reason)

    def _judge_carrier(self) -> None:
        assert self.carrier is not None
        event, reason = self.carrier.look()
        if event is Event.CARRIER_BACK:
            self.recover(event, reason)
        elif event is not None:
            self._fail(event, reason)

    def _fail(self, event: Event, reason: str) -> None:
        """A failing check or a lost carrier: FAILING unbinds at once and frees the lock."""
        if self.fsm.handle(event, reason):
            self.holder = None
            self.report(event, reason)

    def recover(self, event: Event, reason: str) -> None:
        """One cause of FAILING is gone: leave it only if no other holds (checks that still
        fail, a tracked interface still without carrier)."""
        still = self.carrier.why() if self.carrier is not None else ""
        if not still and self.judge.failing:
            still = "health checks fail"
        if still:
            logger.info("%s: %s; still %s: %s", self.vip, reason, self.fsm.state.value, still)
            return
        if self.fsm.handle(event, reason):
            self.report(event, reason)
            self.look_now()  # eligible again: campaign (or read the followed key) now, not at the next tick

    def _apply_fault_policy(self, result: CycleResult) -> CycleResult:
        """FAULT_POLICY turns a `fault` into LinK's rule (activate), nothing (keep), a release, or what the wire decides."""
        if self.fault_policy == FaultPolicy.ARBITRATE:
            assert self.election is not None
            return self.wire.apply(result, failures=self.election.failures, state=self.fsm.state, priority=self._priority(),
                                   lease=float(self.config.lease_ttl))
        if result.event is not Event.FAULT or self.fault_policy == FaultPolicy.ACTIVATE:
            return result
        if self.fault_policy == FaultPolicy.KEEP:
            return CycleResult(None, f"{result.sentence}; keeping the current state (fault policy keep)", result.holder)
        return CycleResult(Event.DEMOTED, f"{result.sentence}; releasing the VIP (fault policy release)", None)

    def cycle(self, wire_only: bool = False) -> None:
        """One election cycle; `wire_only`: the last cycle's etcd failure judged again on what the wire says now."""
        result = self._apply_fault_policy(self.wire.last_failure if wire_only else self._run_election())
        if result.hand_over:
            self._log_cycle(result)
            self.step_down(result.sentence)
            return
        self._on_result(result)

    def _run_election(self) -> CycleResult:
        assert self.election is not None
        eligible = self.fsm.state is not State.FAILING and self.clock() >= self.hold_off_until
        # An idle VIP only refreshes its lease while the watch vouches for the lock; it still
        # reads the lock every TRUSTED_CYCLES + 1 cycles (three leases), should a watch ever
        # miss a change. Each read is an etcd request: at hundreds of VIPs they add up.
        trust = self.etcd.watch_healthy and not self._lock_dirty and self._trusted_reads < TRUSTED_CYCLES
        self._lock_dirty = False
        self._trusted_reads = self._trusted_reads + 1 if trust else 0
        return self.election.run_cycle(eligible=eligible, state=self.fsm.state.value, lock_unchanged=trust)

    def _on_result(self, result: CycleResult) -> None:
        assert self.election is not None
        changed = False
        if result.event is not None:
            if result.holder != self.holder:
                self.holder, changed = result.holder, True
            recovered = self.last_event in (Event.FAULT, Event.WIRE_ELECTED) and result.event is Event.ELECTED
            self.last_event = result.event
            if self.fsm.handle(result.event, result.sentence):
                changed = True
            elif recovered and self.fsm.state is State.ACTIVATED:
                # We held the VIP through the outage and won the lock when etcd came back:
                # peers that also held it may have poisoned neighbour caches, announce again.
                logger.info("%s: etcd is back and this host holds the lock: announcing again", self.vip)
                self.ensure_bound(force_announce=True)
        self._log_cycle(result)
        # Only the lock holder fights other claimants: elected, and etcd answered this cycle
        # (under `keep` a holder cut from etcd gets no event, its last one still says elected).
        self.claims.set_rightful(self.last_event is Event.ELECTED and not self.election.failures)
        if self.fsm.state is State.ACTIVATED:
            self.ensure_bound()
        if changed:
            self.report(result.event, result.sentence)
        self._report_wire()

    def _log_cycle(self, result: CycleResult) -> None:
        troubled = (result.event is Event.FAULT or (result.event is None and "etcd" in result.sentence)
                    or self.wire.fault_since is not None)  # arbitrate turns a fault into a wire decision
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

    def step_down(self, reason: str) -> None:
        """Hand the VIP over: unbind, then free the lock, then stay aside for two lease
        periods — long enough for a standby to take it, short enough that the VIP comes back
        here if none does (at least one host must bind it)."""
        assert self.election is not None
        self.hold_off_until = self.clock() + 2 * self.config.lease_ttl
        self.holder = None
        self.fsm.handle(Event.DEMOTED, reason)
        logger.info("%s: %s", self.vip, self.election.give_up_lock())
        self.report(Event.DEMOTED, reason)

    def _publish(self) -> None:
        if self.election is None:
            return
        try:
            self.election.publish(self.fsm.state.value)
        except EtcdError as exc:
            logger.debug("%s: could not publish state: %s (retried next cycle)", self.vip, exc)

    # -- reports to the supervisor ----------------------------------------------------------
    def report(self, event: Event | None = None, reason: str = "") -> None:
        state = self.fsm.state.value
        self._report_wire()  # first: a step-down goes out on the wire at once, before an etcd call that may wait
        self._publish()
        setproctitle(f"link: vip {self.vip} {state}")
        previous, self._reported_state = self._reported_state, state
        if previous is not None and previous != state:
            self.metrics.transition(event.value if event else None)
        self._binder_reported = self.binder.status() if self.binder is not None else None
        self.link.send(StateReport(
            state=state, since=self.fsm.since, event=event.value if event else None, holder=self.holder, reason=reason,
            priority=self.election.priority if self.election else None, previous=previous,
            metrics=self._metrics_snapshot(), binder_status=self._binder_reported))

    def _report_wire(self) -> None:
        """What this host's heartbeat says of the VIP (link.worker.wire_policy), when it changed."""
        self.wire.report(self.link.send, state=self.fsm.state, holder=self.holder,
                         failures=self.election.failures if self.election else 1, priority=self._priority())

    def _report_binder(self) -> None:
        """Tell the supervisor when the binder's status changed (its thread wakes the loop)."""
        status = self.binder.status() if self.binder is not None else None
        if status != self._binder_reported:
            self._binder_reported = status
            self.link.send(BinderReport(status))

    def _metrics_snapshot(self) -> dict[str, Any]:
        return self.metrics.snapshot(self.etcd.call_stats(), self.binder.packets_sent() if self.binder else 0,
                                     self.election.counters() if self.election else None, self.claims.counters())

    def _send_metrics(self) -> None:
        self.link.send(MetricsReport(self._metrics_snapshot()))

    # -- enter-actions ----------------------------------------------------------------------
    def _enter_activated(self, old: State, event: Event, reason: str) -> None:
        self.ensure_bound(force_announce=True, reason=reason)

    def _enter_standby(self, old: State, event: Event, reason: str) -> None:
        self._unbind(State.STANDBY, reason)

    def _enter_failing(self, old: State, event: Event, reason: str) -> None:
        self._unbind(State.FAILING, reason)
        assert self.election is not None
        logger.info("%s: %s", self.vip, self.election.give_up_lock())

    def ensure_bound(self, force_announce: bool = False, reason: str = "") -> None:
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
        if self.carrier is not None:
            self.carrier.close()
        self.wire.close()
        self.claims.close()
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
        try:
            self.etcd.close()
        except Exception:
            logger.debug("closing %r failed", self.etcd, exc_info=True)
        # Last: the VIP is released here, nothing waits on the notify program any more.
        self.notifier.released(self.fsm.state, f"stopping: {self.stopping}")
        self.notifier.deliver(self.metrics, self.link.send, self._metrics_snapshot)
