"""FAULT_POLICY=arbitrate in the worker: while etcd does not answer, the wire decides (link.wire.arbitration).

The supervisor sends what the peers' heartbeats say of this VIP (`wire_view`); this module
keeps it, listens for ARP/NDP answers for the VIP while this host waits to take it (a LinK v2
agent, or any host that does not speak the heartbeat, is seen that way: link.adapters.capture),
turns the rules' verdict into an event of the state machine (`wire_elected`, `wire_demoted`),
and tells the supervisor what this host's heartbeat must say of the VIP (`wire` report: bound,
lock, eligible, priority, and the decision), only when that changes.

A host that reaches etcd is left to the election; its heartbeat says whether it holds the
lock. One exception makes lock and wire agree when etcd comes back: a host that held the VIP on
the wire's decision keeps it while the lock still names a host that the wire heard holding the
VIP before and no longer hears (a holder that died during the outage: etcd renewed its lease
when it restarted), until this host gets the lock (it campaigns once that lease expires), the
lock holder is heard holding the VIP (then it yields at once), or two leases have passed. A
lock holder the wire never heard holding the VIP (this host was cut from the LAN too, or did
not know its peers yet) is obeyed at once. A host whose etcd calls fail, before KEEPALIVE_RETRY makes it a `fault`, already yields
to a holder that has the lock: that one reached etcd, and the lock is not ours.
"""
from __future__ import annotations

import logging
import selectors
import time
from typing import Any, Callable, Protocol

from link.adapters.capture import ClaimCapture, interface_mac
from link.vocabulary.protocol import Message, WireReport, WireView
from link.vocabulary.vip import address_of
from link.vocabulary.vip_states import Event, State
from link.wire.arbitration import Decision, Verdict, View, decide
from link.worker.election import CycleResult

logger = logging.getLogger(__name__)

_EVENTS = {Decision.KEEP: Event.WIRE_ELECTED, Decision.TAKE: Event.WIRE_ELECTED, Decision.YIELD_TO_LOCK: Event.WIRE_DEMOTED,
           Decision.YIELD_TO_RANK: Event.WIRE_DEMOTED, Decision.WAIT: Event.WIRE_DEMOTED, Decision.IDLE: None}


class Capture(Protocol):
    """What this module uses of link.adapters.capture.ClaimCapture."""

    def fileno(self) -> int: ...

    def read(self) -> list[Any]: ...

    def probe(self) -> None: ...

    def close(self) -> None: ...


def open_claim_capture(interface: str, address: str) -> Capture:
    return ClaimCapture(interface, address)


class WirePolicy:
    def __init__(self, hostname: str, interface: str, vip: str, clock: Callable[[], float],
                 open_capture: Callable[[str, str], Capture] = open_claim_capture) -> None:
        self.hostname = hostname
        self.interface = interface
        self.address = address_of(vip).compressed
        self.clock = clock
        self.open_capture = open_capture
        self.view = View()
        self.fault_since: float | None = None  # the first failed cycle of the current outage
        self.arp_heard_at: float | None = None
        self.verdict: Verdict | None = None
        self.decided_at: float | None = None  # unix time of the current decision
        self._capture: Capture | None = None
        self._selector: selectors.BaseSelector | None = None  # the worker's: an answer wakes it
        self._capture_failed = False
        self._probe_at = 0.0
        self._own_mac = interface_mac(interface) or ""  # our own announcements are no other holder
        self._reported: tuple[Any, ...] | None = None
        self.last_failure = CycleResult(None, "etcd not asked yet")  # the last failed cycle, judged again on a new view
        self._view_changed = False  # a view came during an outage: decide again now
        self._judged_at = 0.0  # (monotonic) when the last failed cycle was judged
        self.after_outage: float | None = None  # when etcd answered again while this host held the VIP on the wire's word
        # Hosts heard holding this VIP (bounded by the peer table): only a lock of one of these,
        # gone silent, is taken for a holder that died. A lock holder never heard (this host was
        # cut from the LAN too, or does not know its peers yet) is obeyed at once.
        self.heard_holding: set[str] = set()

    # -- what the supervisor says -------------------------------------------------------------
    def on_view(self, command: WireView) -> None:
        """Keep the view; during an outage the worker decides again at once (`due`)."""
        self.view = View(command.holders, command.candidates, command.holder_heard_at, command.interval)
        self.heard_holding.update(h.host for h in command.holders if h.host != self.hostname)
        self._view_changed = self.fault_since is not None or self.after_outage is not None

    def attach(self, selector: selectors.BaseSelector) -> None:
        """The worker's selector: the capture's socket is in it while open, so that an ARP/NDP
        answer is read (and timed) when it comes, not at the next cycle."""
        self._selector = selector

    def due(self, now: float) -> bool:
        """Whether the worker should judge its last failed cycle again now, on the wire alone
        (each turn of the worker's loop: the answers heard since the last turn are read first)."""
        if self.fault_since is None:
            # After the outage, a VIP kept beside a lock holder that is not heard: its binding,
            # once heard, is judged at once (the worker yields then, not at its next cycle).
            return self._view_changed and self.after_outage is not None
        self._drain(now)
        when = self.next_due()
        return self._view_changed or (when is not None and now >= when)

    # -- the cycle ----------------------------------------------------------------------------
    def apply(self, result: CycleResult, *, failures: int, state: State, priority: int, lease: float = 0.0) -> CycleResult:
        """The cycle's result under arbitrate: unchanged while etcd answers (but see _lock_and_wire);
        the wire's verdict during a fault. `lease`: the etcd lease's length in seconds."""
        now = self.clock()
        if failures == 0:
            held = self.fault_since is not None and self.verdict is not None and self.verdict.holds
            self._etcd_answers()
            if held and state is State.ACTIVATED:
                self.after_outage = now
            return self._lock_and_wire(result, state, now, lease)
        if self.fault_since is None:
            self.fault_since = now
        self.last_failure, self._view_changed, self._judged_at = result, False, now
        holding = state is State.ACTIVATED
        eligible = state is not State.FAILING
        if not holding and eligible:
            self._listen(now)
        verdict = decide(host=self.hostname, priority=priority, holding=holding, eligible=eligible, view=self.view,
                         now=now, fault_since=self.fault_since, arp_heard_at=self.arp_heard_at)
        if result.event is not Event.FAULT and verdict.decision is not Decision.YIELD_TO_LOCK:
            return result  # not a fault yet: only a holder with the lock is obeyed already
        self._note(verdict)
        event = _EVENTS[verdict.decision]
        if event is None:
            return CycleResult(None, f"{result.sentence}; {verdict.sentence}", result.holder)
        return CycleResult(event, f"{result.sentence}; {verdict.sentence} (fault policy arbitrate)", verdict.holder)

    def _lock_and_wire(self, result: CycleResult, state: State, now: float, lease: float) -> CycleResult:
        """etcd answers again and this host holds the VIP on the wire's decision: a DEMOTED because
        the lock names a host the wire does not hear holding the VIP is not obeyed (it would leave
        the VIP with no holder until that lease expires); the election's word is kept otherwise."""
        self.last_failure, self._view_changed = result, False  # judged again (due) when the view changes
        if self.after_outage is None:
            return result
        holder = result.holder
        if state is not State.ACTIVATED or result.event is Event.ELECTED:
            self.after_outage = None  # the lock is this host's now, or it no longer holds the VIP
            return result
        if result.event is not Event.DEMOTED or result.hand_over or holder in (None, self.hostname):
            return result
        if any(h.host == holder for h in self.view.holders):
            logger.info("%s: %s holds the lock and is heard holding the VIP: yielding", self.address, holder)
            self.after_outage = None
            return result
        if holder not in self.heard_holding:
            logger.info("%s: %s holds the lock and was never heard holding the VIP on the wire: yielding to etcd",
                        self.address, holder)
            self.after_outage = None
            return result
        if now - self.after_outage > 2 * lease:
            logger.warning("%s: %s still holds the lock %.1fs after etcd came back without being heard on the wire: "
                           "yielding to etcd", self.address, holder, now - self.after_outage)
            self.after_outage = None
            return result
        return CycleResult(None, f"{result.sentence}, but the wire does not hear it hold the VIP (a lease that outlived "
                           "the outage?): keeping the VIP until this host gets the lock or that host binds", holder)

    def next_due(self) -> float | None:
        """When a standby's wait may end (the worker runs a cycle then); None: nothing to wait for."""
        if self.fault_since is None or self.verdict is None or self.verdict.due is None:
            return None
        return self.verdict.due if self.verdict.due > self._judged_at else None

    def _etcd_answers(self) -> None:
        if self.fault_since is not None:
            logger.info("%s: etcd answers again: the election decides, not the wire", self.address)
        self.fault_since = None
        self.arp_heard_at = None
        self._close_capture()
        if self.verdict is not None:
            self.verdict, self.decided_at = None, time.time()

    def _note(self, verdict: Verdict) -> None:
        if self.verdict is None or self.verdict.decision is not verdict.decision:
            logger.info("%s: wire decision %s: %s", self.address, verdict.decision.value, verdict.sentence)
            self.decided_at = time.time()
        self.verdict = verdict

    # -- ARP / NDP answers for the VIP -------------------------------------------------------
    def _listen(self, now: float) -> None:
        if self._capture is None and not self._capture_failed:
            try:
                self._capture = self.open_capture(self.interface, self.address)
            except OSError as exc:  # no raw socket (no CAP_NET_RAW), or the interface is gone
                self._capture_failed = True
                logger.warning("%s: cannot listen for ARP/NDP answers (%s): only heartbeats tell whether a host "
                               "holds the VIP", self.address, exc)
                return
            if self._selector is not None:
                self._selector.register(self._capture.fileno(), selectors.EVENT_READ)
        if self._capture is None:
            return
        self._drain(now)
        if now >= self._probe_at:
            self._probe_at = now + self.view.interval
            try:
                self._capture.probe()
            except OSError as exc:
                logger.debug("%s: probe failed: %s", self.address, exc)

    def _drain(self, now: float) -> None:
        if self._capture is None:
            return
        for sighting in self._capture.read():
            if getattr(sighting, "mac", "") != self._own_mac:
                self.arp_heard_at = max(self.arp_heard_at or 0.0, getattr(sighting, "at", now))

    def _close_capture(self) -> None:
        if self._capture is not None:
            if self._selector is not None:
                try:
                    self._selector.unregister(self._capture.fileno())
                except (KeyError, ValueError):
                    pass
            self._capture.close()
            self._capture = None
        self._capture_failed = False

    def close(self) -> None:
        self._close_capture()

    # -- what this host's heartbeat says -----------------------------------------------------
    def report(self, send: Callable[[Message], None], *, state: State, holder: str | None, failures: int,
               priority: int) -> None:
        """Send the `wire` report when what the heartbeat says, or the decision, changed."""
        verdict = self.verdict
        report = WireReport(
            bound=state is State.ACTIVATED, lock=state is State.ACTIVATED and holder == self.hostname and failures == 0,
            eligible=state is not State.FAILING, priority=priority,
            decision=verdict.decision.value if verdict else None, rank=verdict.rank if verdict else None,
            since=self.decided_at, reason=verdict.sentence if verdict else "")
        said = (report.bound, report.lock, report.eligible, report.priority, report.decision, report.rank)
        if said != self._reported:
            self._reported = said
            send(report)
