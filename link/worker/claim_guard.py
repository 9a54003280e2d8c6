"""The worker's eyes on the wire: another claimant of its VIP seen, reported and answered.

While the VIP is ACTIVATED here, the guard keeps a `link.adapters.capture.ClaimCapture` open on
INTERFACE (its socket in the worker's selector: a claim wakes the loop), feeds what it reads
to a `link.worker.claim_watch.ClaimWatch`, probes when the watch says so and announces again
through the binder's `announce_once()` when this host holds the etcd lock. For people: one
WARNING line per claim (the other MAC, and the peer host when a peer publishes that MAC under
/link/agents/), and a `claim` report to the supervisor (an event on the VIP, the VIP's
`foreign_claim` field, the `link_vip_foreign_claim` gauge); the detections are counted in the
worker's metrics (`link_vip_foreign_claims_total`).

Only for a binder that declares `announces` (the `arp` binder): it puts the VIP on INTERFACE
and announces it (`announce_once()` answers a claim). A `command` or `webhook` binder moves
the address elsewhere (a cloud's floating IP is not on this LAN at all, and link sends
nothing for it): their programs own how clients find the VIP.
"""
from __future__ import annotations

import logging
import selectors
import time
from typing import Any, Callable

from link import probe_budget
from link.adapters.capture import ClaimCapture, host_macs
from link.etcd.port import EtcdError, EtcdPort
from link.etcd.values import as_name
from link.vocabulary.agents_key import AGENTS_PREFIX, agent_mac
from link.vocabulary.claim_events import ClaimNote
from link.warn_throttle import WarningThrottle
from link.vocabulary.protocol import ClaimReport, Message
from link.worker.binders import Binder
from link.worker.claim_watch import Change, Claim, ClaimState, ClaimTiming, ClaimWatch

logger = logging.getLogger(__name__)

PEERS_FRESH = 60.0  # seconds a read of the peers' MACs is used for
PEERS_RETRY = 10.0  # the least time between two reads for a MAC no peer published
# New claims while others live (forged MACs from a flood): one WARNING per this many seconds,
# the rest at DEBUG and counted in the next WARNING. A lone claim always gets its line.
WARN_EVERY = 10.0



def peers_by_mac(etcd: EtcdPort, own_host: str) -> dict[str, str]:
    """MAC -> peer host, from the peers' /link/agents keys that live on a lease."""
    found: dict[str, str] = {}
    for key, info in etcd.get_prefix(AGENTS_PREFIX).items():
        host = key[len(AGENTS_PREFIX):]
        mac = agent_mac(info.value) if info.lease and host != own_host else None
        if mac is not None:
            found.setdefault(mac, as_name(host))
    return found


class ClaimGuard:
    """Idle until `use()` gives it a binder that announces; `send` and `metrics` are the worker's (a
    `claim` report carries the worker's numbers, so the detection counter moves at once)."""

    def __init__(self, vip: str, interface: str, send: Callable[[Message], None], metrics: Callable[[], dict[str, Any]],
                 peers: Callable[[], dict[str, str]], clock: Callable[[], float] = time.monotonic,
                 open_capture: Callable[[str, str], ClaimCapture] = ClaimCapture,
                 own_macs: Callable[[], set[str]] = host_macs, probe_rate: float = probe_budget.DEFAULT_RATE) -> None:
        self.vip = vip
        self.address = vip.split("/")[0]
        self.interface = interface
        self.binder: Binder | None = None
        self.send = send
        self.metrics = metrics
        self.peers = peers
        self.clock = clock
        self.open_capture = open_capture
        self.own_macs = own_macs  # this host's other interfaces are no claimant (see host_macs)
        self.probe_rate = probe_rate  # CLAIM_PROBE_RATE: link.worker.entry sets the agent's
        self.capture: ClaimCapture | None = None
        self.watch: ClaimWatch | None = None
        self.rightful = False
        self.detections = 0  # over the worker's life (the watch's count starts again at each open)
        self.probes = 0
        self.reannounces = 0
        self._selector: selectors.BaseSelector | None = None
        self._failed_open = False
        self._known: dict[str, str] = {}  # MAC -> peer host
        self._known_at: float | None = None
        self._warnings = WarningThrottle(WARN_EVERY, clock)

    # -- the worker's hooks ------------------------------------------------------------------
    def use(self, binder: Binder) -> None:
        """The VIP's binder, once made: watched only if it announces the VIP on INTERFACE (its
        `announces`; a binder that does not say is taken as one that does not)."""
        self.binder = binder if getattr(binder, "announces", False) else None

    def report(self, claim: dict[str, Any] | None, event: ClaimNote, reason: str) -> None:
        self.send(ClaimReport(claim, event.value, reason, self.metrics()))

    def attach(self, selector: selectors.BaseSelector) -> None:
        """The worker's selector: the capture's socket is in it while open."""
        self._selector = selector
        if self.capture is not None:
            selector.register(self.capture, selectors.EVENT_READ)

    def set_rightful(self, rightful: bool) -> None:
        """Whether this host holds the etcd lock (as the last election cycle read it)."""
        self.rightful = rightful
        if self.watch is not None:
            self.watch.set_rightful(rightful)

    def next_due(self) -> float | None:
        return self.watch.next_due() if self.watch is not None else None

    def run_due(self, active: bool) -> None:
        """Each turn of the worker's loop: open or close with ACTIVATED, then read, probe and
        announce as the watch says."""
        if self.binder is None:
            return
        if active and self.capture is None:
            self._open()
        elif not active and self.capture is not None:
            self.close("this host no longer holds the VIP")
        if self.capture is None or self.watch is None or self.binder is None:
            return
        changes = self.watch.feed(self.capture.read()) + self.watch.tick()
        reason = self.watch.reannounce_due()
        if reason is not None:
            # First: clients come back before anything is written or looked up.
            self.binder.announce_once()
            self.reannounces += 1
            logger.debug("%s: announcing again: %s", self.vip, reason)
        for change in changes:
            self._tell(change)
        if self.watch.seen_now() is None:
            self._warnings.clear()  # no claim lives: the next one is logged at once
        if self.watch.probe_due():
            self.capture.probe()
            self.probes += 1

    def reannounce_now(self, reason: str) -> None:
        """Announce at once (for a caller that knows a peer stepped down)."""
        if self.watch is not None:
            self.watch.reannounce_now(reason)

    def probe_period(self) -> float:
        """The period of this VIP's probe while no claim lives: the host's budget shared."""
        return probe_budget.probe_period(ClaimTiming.probe_every, self.probe_rate)

    def counters(self) -> dict[str, int]:
        return {"detections": self.detections, "probes": self.probes, "reannounces": self.reannounces}

    def close(self, why: str = "stopping") -> None:
        if self.watch is not None and self.watch.seen_now() is not None:
            self.report(None, ClaimNote.FOREIGN_CLAIM_OVER, f"no longer watched: {why}")
        if self.capture is not None:
            if self._selector is not None:
                try:
                    self._selector.unregister(self.capture)
                except (KeyError, ValueError, RuntimeError):
                    pass  # at shutdown the loop's selector is closed already
            self.capture.close()
        self.capture, self.watch = None, None

    # -- inside ------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            capture = self.open_capture(self.interface, self.address)
        except OSError as exc:
            if not self._failed_open:  # once per failure, not once per turn of the loop
                logger.warning("%s: cannot watch %s for other claimants of the VIP: %s", self.vip, self.interface, exc)
            self._failed_open = True
            return
        self._failed_open = False
        self.capture = capture
        self.watch = ClaimWatch({capture.mac, *self.own_macs()}, self.clock, label=f"{self.vip}: ",
                                idle_period=self.probe_period)
        self.watch.set_rightful(self.rightful)
        if self._selector is not None:
            self._selector.register(capture, selectors.EVENT_READ)

    def _host_of(self, mac: str) -> str | None:
        """The peer that publishes `mac`; read from etcd only when this host holds the lock
        (etcd answers then: a host cut from etcd does not wait on it for a name)."""
        now = self.clock()
        stale = self._known_at is None or now - self._known_at >= PEERS_FRESH
        unknown_may_retry = mac not in self._known and (self._known_at is None or now - self._known_at >= PEERS_RETRY)
        if self.rightful and (stale or unknown_may_retry):
            try:
                self._known, self._known_at = self.peers(), now
            except EtcdError as exc:
                logger.debug("%s: could not read the peers' MACs: %s", self.vip, exc)
        return self._known.get(mac)

    def _document(self, claim: Claim, host: str | None) -> dict[str, Any]:
        since = time.time() - max(0.0, self.clock() - claim.first_seen)
        return {"mac": claim.mac, "host": host, "since": since, "kind": claim.kind}

    def _tell(self, change: Change) -> None:
        claim = change.claim
        if change.detected:
            self.detections += 1
            host = self._host_of(claim.mac)
            who = f"{claim.mac} (host {host})" if host else f"{claim.mac} (no link agent publishes this MAC)"
            answer = ("this host holds the etcd lock: announcing again now and while the claim lasts" if self.rightful
                      else "this host holds the VIP without the etcd lock: not fighting")
            loud, held = self._warnings.trouble()
            more = f" ({held} more claims in the last {WARN_EVERY:.0f}s not logged)" if held else ""
            logger.log(logging.WARNING if loud else logging.DEBUG, "%s: another claimant on %s: %s says it has this "
                       "address (%s); %s%s", self.vip, self.interface, who, claim.kind, answer, more)
            self.report(self._document(claim, host), ClaimNote.FOREIGN_CLAIM, f"{who} claims the VIP ({claim.kind}); {answer}")
        elif change.over:
            host = self._known.get(claim.mac)
            who = f"{claim.mac} (host {host})" if host else claim.mac
            lasted = claim.last_seen - claim.first_seen
            logger.info("%s: the claim of %s is over (seen for %.1fs, silent since)", self.vip, who, lasted)
            latest = self.watch.seen_now() if self.watch is not None else None
            if latest is not None and latest.state is not ClaimState.NONE:
                self.report(self._document(latest, self._known.get(latest.mac)), ClaimNote.FOREIGN_CLAIM_OVER, f"{who}: claim over")
            else:
                self.report(None, ClaimNote.FOREIGN_CLAIM_OVER, f"{who} no longer claims the VIP (seen for {lasted:.1f}s)")
        elif change.new is ClaimState.QUIET:
            then = "announcing again now" if self.rightful else "this host does not hold the etcd lock: not announcing"
            logger.info("%s: %s stopped answering for the VIP (stepped down?): %s", self.vip, claim.mac, then)

