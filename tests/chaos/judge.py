"""Judging a chaos run: the bounds link's promises are held to, the timeline of what the faults
allowed (a host down, a check failing, etcd out), and which of the observer's episodes (gaps,
doubles) break a promise. No lab here: tests/unit/test_chaos_judge.py drives it on made-up
observations.
"""
from __future__ import annotations

from dataclasses import dataclass, field

LEASE = 1.0  # KEEPALIVE_INTERVAL in the lab (etcd's election timeout is 250 ms: 1 s is granted)
HEALTH_INTERVAL = 0.5
# A dead holder's lease expires after LEASE; etcd revokes expired leases on a ~500 ms tick;
# the standbys' watch fires within ms; a worse candidate leaves a free lock to a better one
# for one tick (LEASE / 3); binding and sampling take a few ms. 1.5 s covers all of that on
# this loaded 2-core machine.
GAP_MARGIN = 1.5
GAP_BOUND = LEASE + GAP_MARGIN
# A host back from a partition (its link was down, it kept the VIP under FAULT_POLICY
# activate) sees another lease on the lock at its next cycle once it reaches etcd again. A
# killed agent's VIP lives until its address lifetime (one lease) ends; a peer takes it once
# etcd's ~500 ms revoke tick frees the lock: an overlap of a few tens of ms at most.
DOUBLE_BOUND = LEASE
# After etcd comes back, the hosts converge within two lease periods (README), plus margin.
CONVERGE = 2 * LEASE + GAP_MARGIN
# A check that stops failing: the next round passes (HEALTH_INTERVAL), the worker is STANDBY.
HEALTH_GRACE = HEALTH_INTERVAL + 0.5
# A link that comes back: a fresh connection to etcd.
LINK_GRACE = 1.0


@dataclass
class Episode:
    vip: str
    kind: str  # "gap" or "double"
    start: float
    end: float
    hosts: frozenset
    samples: int

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class Window:
    start: float
    end: float | None = None  # None: still open

    def covers(self, t: float, grace: float = 0.0) -> bool:
        return self.start <= t and (self.end is None or t <= self.end + grace)


@dataclass
class Timeline:
    host_down: dict[str, list[Window]] = field(default_factory=dict)  # not a candidate at all
    unhealthy: dict[tuple[str, str], list[Window]] = field(default_factory=dict)
    link_back: dict[str, list[float]] = field(default_factory=dict)  # times a link came back
    etcd_out: list[Window] = field(default_factory=list)  # no member answers
    events: list[tuple[float, str]] = field(default_factory=list)

    def candidate(self, host: str, vip: str, t: float) -> bool:
        if any(w.covers(t) for w in self.host_down.get(host, [])):
            return False
        if any(back <= t <= back + LINK_GRACE for back in self.link_back.get(host, [])):
            return False
        return not any(w.covers(t, HEALTH_GRACE) for w in self.unhealthy.get((host, vip), []))

    def etcd_excuse(self, t: float) -> bool:
        return any(w.covers(t, CONVERGE) for w in self.etcd_out)


def double_excused(ep: Episode, timeline: Timeline) -> bool:
    """Two holders are allowed while etcd is out, and CONVERGE after it is back."""
    return any(timeline.etcd_excuse(t) for t in _steps(ep.start, ep.end))


def gap_blame(ep: Episode, timeline: Timeline, hosts: list[str]) -> float:
    """How long the gap lasted since the last moment it was allowed (no candidate, or etcd
    out), at a 10 ms resolution."""
    blame_from = ep.start
    for t in _steps(ep.start, ep.end):
        if timeline.etcd_excuse(t) or not any(timeline.candidate(h, ep.vip, t) for h in hosts):
            blame_from = t
    return max(0.0, ep.end - blame_from)


def find_violations(episodes: list[Episode], timeline: Timeline, hosts: list[str], t0: float = 0.0) -> list[str]:
    """The violations among the observer's episodes, given the fault timeline."""
    out = []
    for ep in episodes:
        where = f"{ep.vip} from +{ep.start - t0:.3f}s to +{ep.end - t0:.3f}s"
        if ep.kind == "double":
            if not double_excused(ep, timeline) and ep.length > DOUBLE_BOUND:
                out.append(f"two holders ({', '.join(sorted(ep.hosts))}) for {ep.length:.3f}s > {DOUBLE_BOUND}s "
                           f"while etcd was reachable: {where}")
        else:
            blamed = gap_blame(ep, timeline, hosts)
            if blamed > GAP_BOUND:
                out.append(f"no holder for {blamed:.3f}s > {GAP_BOUND}s while a healthy candidate was up: {where}")
    return out


def _steps(start: float, end: float, step: float = 0.01) -> list[float]:
    n = max(1, int((end - start) / step))
    return [start + i * (end - start) / n for i in range(n + 1)]
