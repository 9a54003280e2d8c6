"""Judging a chaos run: the bounds link's promises are held to, the timeline of what the faults
allowed (a host down, a check failing, etcd out, a host cut from etcd, a rogue claimant), and
which of the observer's episodes (gaps, doubles) and client views (the client's neighbour entry
against the holders) break a promise. No lab here: tests/unit/test_chaos_judge.py drives it on
made-up observations.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Iterator

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

# Issue 15, point 3 (FAULT_POLICY=arbitrate): while etcd is out the hosts agree over the LAN.
# The promised figures, and what the observer adds to them: a double is measured from its
# first sample to the first sample without it, and a sample can take 100-200 ms on this
# loaded machine.
SAMPLING_MARGIN = 0.25
OUTAGE_DOUBLE = 1.0       # etcd down: a double of at most 1 s, once per outage
CUT_YIELD = 2.0           # a host cut from etcd yields within 2 s of the lock holder binding
# etcd back: one holder within one lease. The outage's end is when the run saw every member
# answer /health again, polled every 50 ms: the agents may reach etcd a little earlier, never
# later, so the margin only covers the sampling.
AFTER_ETCD = LEASE + SAMPLING_MARGIN
# Issue 15, points 1-2: the client's neighbour entry points at a live holder within 3 s of any
# change (a new holder set, a foreign claim).
NEIGH_BOUND = 3.0 + SAMPLING_MARGIN


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
class ClientView:
    """One VIP as the observer saw it change: the hosts holding it (bound, link up) from each
    time on, and the client's neighbour entry for it (a MAC, None: no usable entry)."""
    holders: list[tuple[float, frozenset]] = field(default_factory=list)
    neigh: list[tuple[float, str | None]] = field(default_factory=list)


@dataclass
class Timeline:
    host_down: dict[str, list[Window]] = field(default_factory=dict)  # not a candidate at all
    unhealthy: dict[tuple[str, str], list[Window]] = field(default_factory=dict)
    link_back: dict[str, list[float]] = field(default_factory=dict)  # times a link came back
    etcd_out: list[Window] = field(default_factory=list)  # no member answers
    etcd_cut: dict[str, list[Window]] = field(default_factory=dict)  # this host alone cannot reach etcd
    member_down: list[Window] = field(default_factory=list)  # one etcd member killed
    rogue: dict[str, list[Window]] = field(default_factory=dict)  # a foreign machine claims this VIP
    policies: dict[str, str] = field(default_factory=dict)  # VIP -> its effective FAULT_POLICY
    events: list[tuple[float, str]] = field(default_factory=list)

    def candidate(self, host: str, vip: str, t: float) -> bool:
        if any(w.covers(t) for w in self.host_down.get(host, [])):
            return False
        if any(back <= t <= back + LINK_GRACE for back in self.link_back.get(host, [])):
            return False
        if any(w.covers(t, LINK_GRACE) for w in self.etcd_cut.get(host, [])):
            return False  # it cannot take the lock
        return not any(w.covers(t, HEALTH_GRACE) for w in self.unhealthy.get((host, vip), []))

    def etcd_excuse(self, t: float) -> bool:
        return any(w.covers(t, CONVERGE) for w in self.etcd_out)

    def cut_excuse(self, hosts: frozenset, t: float) -> bool:
        return any(w.covers(t, CONVERGE) for h in hosts for w in self.etcd_cut.get(h, []))

    def member_excuse(self, t: float) -> bool:
        # A worker whose client was on the killed member is cut from etcd until it has switched
        # to another one (all of them are, while a killed leader is replaced); LinK's rules keep
        # (keep) or take (activate) the VIP while cut. Not an excuse under arbitrate: a cut host
        # yields to the lock holder it hears (arbitrate_double).
        return any(w.covers(t, CONVERGE) for w in self.member_down)

    def arbitrated(self, vip: str) -> bool:
        return self.policies.get(vip) == "arbitrate"


def double_excused(ep: Episode, timeline: Timeline) -> bool:
    """LinK's rules (activate, keep, release): two holders are allowed while etcd is out, while
    one of them is cut from etcd (also by the death of the member its client uses), and
    CONVERGE after either."""
    return any(timeline.etcd_excuse(t) or timeline.cut_excuse(ep.hosts, t) or timeline.member_excuse(t)
               for t in _steps(ep.start, ep.end))


def arbitrate_double(ep: Episode, timeline: Timeline, earlier: list[Episode]) -> str | None:
    """Why a double of an `arbitrate` VIP breaks issue 15's point 3, or None. `earlier`: the
    VIP's doubles that started before this one."""
    for w in timeline.etcd_out:
        if w.covers(ep.start):
            if any(w.covers(e.start) for e in earlier):
                return "a second double during one etcd outage (one is allowed)"
            if ep.length > OUTAGE_DOUBLE + SAMPLING_MARGIN:
                return f"a double of {ep.length:.3f}s > {OUTAGE_DOUBLE}s while etcd was out"
            return None
        if w.end is not None and w.end < ep.start <= w.end + AFTER_ETCD:
            if ep.end > w.end + AFTER_ETCD:
                return f"two holders {ep.end - w.end:.3f}s after etcd came back > one lease ({AFTER_ETCD}s)"
            return None
    if any(w.covers(ep.start, LINK_GRACE) for h in ep.hosts for w in timeline.etcd_cut.get(h, [])):
        if ep.length > CUT_YIELD + SAMPLING_MARGIN:
            return f"a host cut from etcd kept the VIP {ep.length:.3f}s > {CUT_YIELD}s beside another holder"
        return None
    if ep.length > DOUBLE_BOUND:
        return f"two holders for {ep.length:.3f}s > {DOUBLE_BOUND}s while etcd was reachable"
    return None


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
    doubles_so_far: dict[str, list[Episode]] = {}
    for ep in sorted(episodes, key=lambda e: e.start):
        where = f"{ep.vip} from +{ep.start - t0:.3f}s to +{ep.end - t0:.3f}s"
        if ep.kind == "double":
            earlier = doubles_so_far.setdefault(ep.vip, [])
            if timeline.arbitrated(ep.vip):
                why = arbitrate_double(ep, timeline, earlier)
                if why:
                    out.append(f"arbitrate: {why} ({', '.join(sorted(ep.hosts))}): {where}")
            elif not double_excused(ep, timeline) and ep.length > DOUBLE_BOUND:
                out.append(f"two holders ({', '.join(sorted(ep.hosts))}) for {ep.length:.3f}s > {DOUBLE_BOUND}s "
                           f"while etcd was reachable: {where}")
            earlier.append(ep)
        else:
            blamed = gap_blame(ep, timeline, hosts)
            if blamed > GAP_BOUND:
                out.append(f"no holder for {blamed:.3f}s > {GAP_BOUND}s while a healthy candidate was up: {where}")
    return out


def _client_states(view: ClientView, macs: dict[str, str], end: float) -> Iterator[tuple[float, float, frozenset, str | None, bool]]:
    """(from, until, holders, the client's MAC, whether it points elsewhere than at a live
    holder while some host holds the VIP) for each stretch where nothing changed."""
    holders_at, neigh_at = _Lookup(view.holders, frozenset()), _Lookup(view.neigh, None)
    points = sorted({t for t, _ in view.holders} | {t for t, _ in view.neigh})
    for i, t in enumerate(points):
        holders, mac = holders_at(t), neigh_at(t)
        wrong = bool(holders) and mac is not None and mac not in {macs.get(h) for h in holders}
        yield t, points[i + 1] if i + 1 < len(points) else end, holders, mac, wrong


def neigh_violations(vip: str, view: ClientView, macs: dict[str, str], timeline: Timeline, end: float,
                     t0: float = 0.0) -> list[str]:
    """Stretches where the client's entry for `vip` pointed elsewhere than at a live holder
    (some host held it) more than NEIGH_BOUND after the last change: the holder set changed,
    or a rogue claimed the VIP. No entry at all is not judged: the next packet asks afresh."""
    changes = sorted([t for t, _ in view.holders] + [w.start for w in timeline.rogue.get(vip, [])])
    blamed: list[tuple[float, float, frozenset, str | None]] = []  # merged stretches
    for t, until, holders, mac, wrong in _client_states(view, macs, end):
        if not wrong:
            continue
        k = bisect.bisect_right(changes, t)
        start = max(t, (changes[k - 1] if k else t0) + NEIGH_BOUND)
        if start >= until:
            continue
        if blamed and abs(blamed[-1][1] - start) < 1e-9:
            blamed[-1] = (blamed[-1][0], until, blamed[-1][2], blamed[-1][3])
        else:
            blamed.append((start, until, holders, mac))
    out = []
    for start, stop, holders, mac in blamed:
        owner = next((h for h, m in macs.items() if m == mac), "a foreign machine")
        out.append(f"the client's entry for {vip} pointed at {mac} ({owner}), not at a live holder "
                   f"({', '.join(sorted(holders))}), for {stop - start:.3f}s beyond {NEIGH_BOUND}s after the "
                   f"last change: +{start - t0:.3f}s to +{stop - t0:.3f}s")
    return out


def longest_wrong_entry(view: ClientView, macs: dict[str, str], end: float) -> float:
    """The longest stretch (excused or not) where the client's entry pointed elsewhere than
    at a live holder while some host held the VIP (for the run's summary)."""
    longest, since = 0.0, None
    for t, until, _, _, wrong in _client_states(view, macs, end):
        if wrong and since is None:
            since = t
        elif not wrong and since is not None:
            longest, since = max(longest, t - since), None
    return max(longest, end - since) if since is not None else longest


class _Lookup:
    """The value in force at a time, from a time-sorted list of (time, value) changes."""

    def __init__(self, changes: list[tuple[float, Any]], default: Any) -> None:
        self.times, self.values, self.default = [c[0] for c in changes], [c[1] for c in changes], default

    def __call__(self, t: float) -> Any:
        k = bisect.bisect_right(self.times, t)
        return self.values[k - 1] if k else self.default


def _steps(start: float, end: float, step: float = 0.01) -> list[float]:
    n = max(1, int((end - start) / step))
    return [start + i * (end - start) / n for i in range(n + 1)]
