"""Another claimant of this host's VIP: what is seen, when to probe, when to announce again.

Pure logic on a clock, fed the sightings a `link.adapters.capture.ClaimCapture` reads (the
worker's claim guard, `link.worker.claim_guard`, does the I/O). Each MAC other than this
host's own that claims the VIP is a claim with a small life of its own, a table like the VIP's
(`TRANSITIONS`): detected (SEEN), QUIET when it stops answering the probes, over (NONE) when
it has said nothing for EXPIRES_AFTER. While a claim lives the probes go fast, so that its
end is noticed within a second.

Who fights: only the rightful holder (`rightful`: this host holds the etcd lock, as the last
election cycle read it) announces again: at once on a detection, once more after the
clients' 1 s neighbour `locktime` (a Linux client ignores a second update of an entry within
a second of the first: our first answer may land inside the claimant's), then every
REANNOUNCE_EVERY while the claim is SEEN. When a claim goes quiet (a split brain ends: the
other host stepped down) the rightful holder announces at once (and after the locktime once
more), so clients that last heard the other host come back within a second. A host that holds
the VIP only through its fault policy (etcd unreachable) reports the claim and does not fight.
"""
from __future__ import annotations

import enum
import logging
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from link import probe_budget, state_diagram
from link.adapters.capture import Sighting

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimTiming:
    probe_every: float = 2.0  # while ACTIVATED and nothing is seen, at most (the host's budget may stretch it)
    probe_fast: float = 0.25  # while a claim lives
    quiet_after: float = 0.8  # no sighting for this long (3 fast probes unanswered): QUIET
    expires_after: float = 3.0  # no sighting for this long: the claim is over
    follow_up: float = 1.2  # a second announcement after the clients' 1 s locktime
    reannounce_every: float = 2.0  # then, while the claim is SEEN


MAX_CLAIMANTS = 16  # MACs followed at once: a flood of forged ones does not grow the worker


class ClaimState(str, enum.Enum):
    NONE = "NONE"  # not seen (or no longer)
    SEEN = "SEEN"  # claiming the VIP, answering the probes
    QUIET = "QUIET"  # stopped answering; over unless heard again soon


class ClaimEvent(str, enum.Enum):
    SIGHTED = "sighted"
    WENT_QUIET = "went_quiet"
    EXPIRED = "expired"


C, CE = ClaimState, ClaimEvent
TRANSITIONS: Mapping[tuple[ClaimState, ClaimEvent], ClaimState] = {
    (C.NONE, CE.SIGHTED): C.SEEN,
    (C.NONE, CE.WENT_QUIET): C.NONE,
    (C.NONE, CE.EXPIRED): C.NONE,
    (C.SEEN, CE.SIGHTED): C.SEEN,
    (C.SEEN, CE.WENT_QUIET): C.QUIET,
    (C.SEEN, CE.EXPIRED): C.NONE,
    (C.QUIET, CE.SIGHTED): C.SEEN,
    (C.QUIET, CE.WENT_QUIET): C.QUIET,
    (C.QUIET, CE.EXPIRED): C.NONE,
}


@dataclass
class Claim:
    mac: str
    kind: str  # of the last sighting (link.adapters.capture.KINDS)
    first_seen: float
    last_seen: float
    state: ClaimState = ClaimState.NONE
    sightings: int = 0


@dataclass(frozen=True)
class Change:
    """A claim moved: NONE -> SEEN is a detection, SEEN -> QUIET a claimant gone silent,
    QUIET -> SEEN one heard again, * -> NONE a claim over."""

    claim: Claim
    old: ClaimState
    new: ClaimState

    @property
    def detected(self) -> bool:
        return self.old is ClaimState.NONE and self.new is ClaimState.SEEN

    @property
    def over(self) -> bool:
        return self.new is ClaimState.NONE and self.old is not ClaimState.NONE


class ClaimWatch:
    def __init__(self, own_macs: Iterable[str], clock: Callable[[], float], timing: ClaimTiming = ClaimTiming(),
                 label: str = "", idle_period: Callable[[], float] | None = None,
                 draw: Callable[[], float] = random.random) -> None:
        """`idle_period`: the probe period while no claim lives, asked at each probe (the
        host's budget, link.probe_budget; timing.probe_every without one); `draw`: the random
        phase of the first probe, in [0, 1) of that period."""
        self.own = {mac.lower() for mac in own_macs}
        self.clock = clock
        self.timing = timing
        self.idle_period = idle_period or (lambda: timing.probe_every)
        self.label = label
        self.claims: dict[str, Claim] = {}
        self.rightful = False
        self.detections = 0
        self._next_probe = clock() + probe_budget.first_delay(self.idle_period(), draw)
        self._reannounce_at: float | None = None
        self._reannounce_reason = ""
        self._follow_up = False  # the next re-announce is the one after the clients' locktime

    # -- the one setter ----------------------------------------------------------------------
    def _move(self, claim: Claim, event: ClaimEvent) -> Change | None:
        new = TRANSITIONS[(claim.state, event)]
        if new is claim.state:
            return None
        old, claim.state = claim.state, new
        logger.debug("%sclaim by %s: %s -> %s on %s", self.label, claim.mac, old.value, new.value, event.value)
        return Change(claim, old, new)

    # -- inputs ------------------------------------------------------------------------------
    def set_rightful(self, rightful: bool) -> None:
        """Whether this host holds the etcd lock (each election cycle says)."""
        if rightful and not self.rightful and self._any(ClaimState.SEEN):
            self._schedule("this host holds the etcd lock while another claimant is seen")
        elif not rightful:
            self._reannounce_at = None
        self.rightful = rightful

    def feed(self, sightings: Iterable[Sighting]) -> list[Change]:
        changes = []
        for sighting in sightings:
            mac = sighting.mac.lower()
            if mac in self.own:
                continue  # our own frames, reflected by a bridge or a bond
            claim = self.claims.get(mac)
            if claim is None:
                if len(self.claims) >= MAX_CLAIMANTS:
                    continue
                claim = self.claims[mac] = Claim(mac, sighting.kind, sighting.at, sighting.at)
            claim.kind, claim.last_seen = sighting.kind, max(claim.last_seen, sighting.at)
            claim.sightings += 1
            change = self._move(claim, ClaimEvent.SIGHTED)
            if change is None:
                continue
            changes.append(change)
            if change.detected:
                self.detections += 1
                claim.first_seen = sighting.at
                # Probe fast from now on: the claim's end must be seen within a second.
                self._next_probe = min(self._next_probe, self.clock() + self.timing.probe_fast)
                if self.rightful:
                    self._schedule(f"another claimant ({mac}) was seen")
        return changes

    def tick(self) -> list[Change]:
        """The claims that went quiet or are over by now."""
        now = self.clock()
        changes = []
        for mac, claim in list(self.claims.items()):
            silent = now - claim.last_seen
            event = ClaimEvent.EXPIRED if silent >= self.timing.expires_after else \
                ClaimEvent.WENT_QUIET if silent >= self.timing.quiet_after else None
            change = self._move(claim, event) if event is not None else None
            if claim.state is ClaimState.NONE:
                del self.claims[mac]
            if change is None:
                continue
            changes.append(change)
            if change.new is ClaimState.QUIET and self.rightful:
                self._schedule(f"the other claimant ({mac}) went quiet")
        return changes

    def reannounce_now(self, reason: str) -> None:
        """Announce at once (and after the locktime once more), rightful or not: for a caller
        that knows better (a peer said it stepped down)."""
        self._schedule(reason)

    # -- outputs -----------------------------------------------------------------------------
    def _schedule(self, reason: str) -> None:
        self._reannounce_at, self._reannounce_reason, self._follow_up = self.clock(), reason, True

    def probe_due(self) -> bool:
        """Whether a probe should go now (if so, counted as sent and the next one planned)."""
        now = self.clock()
        if now < self._next_probe:
            return False
        # Fast while a claim lives (only the VIPs with a claim: the budget is for the quiet ones).
        self._next_probe = _after(self._next_probe, self.timing.probe_fast if self.claims else self.idle_period(), now)
        return True

    def reannounce_due(self) -> str | None:
        """Why to announce now, or None (if due, the next one is planned)."""
        now = self.clock()
        if self._reannounce_at is None or now < self._reannounce_at:
            return None
        reason, planned = self._reannounce_reason, self._reannounce_at
        if self._follow_up:
            self._follow_up = False
            self._reannounce_at = _after(planned, self.timing.follow_up, now)
            self._reannounce_reason = f"{reason} (again, after the clients' neighbour locktime)"
        elif self.rightful and self._any(ClaimState.SEEN):
            self._reannounce_at = _after(planned, self.timing.reannounce_every, now)
            self._reannounce_reason = "another claimant is still seen"
        else:
            self._reannounce_at = None
        return reason

    def next_due(self) -> float:
        """When probe_due, reannounce_due or tick may next have something to say."""
        times = [self._next_probe]
        if self._reannounce_at is not None:
            times.append(self._reannounce_at)
        for claim in self.claims.values():
            limit = self.timing.quiet_after if claim.state is ClaimState.SEEN else self.timing.expires_after
            times.append(claim.last_seen + limit)
        return min(times)

    def seen_now(self) -> Claim | None:
        """The claim heard last, among those not over."""
        return max(self.claims.values(), key=lambda claim: claim.last_seen, default=None)

    def _any(self, state: ClaimState) -> bool:
        return any(claim.state is state for claim in self.claims.values())


def _after(planned: float, period: float, now: float) -> float:
    """The next time of a periodic action: one period after the planned time (a late loop does
    not shift the schedule), or after now when it fell that far behind (no burst to catch up)."""
    following = planned + period
    return following if following > now else now + period


def mermaid() -> str:
    """A claim's life as a diagram (docs/ARCHITECTURE.md shows it; a unit test keeps them equal)."""
    return state_diagram.mermaid(ClaimState.NONE, TRANSITIONS)


if __name__ == "__main__":
    print("```mermaid\n" + mermaid() + "\n```")
