"""The rules a worker applies to its VIP while it cannot reach etcd (FAULT_POLICY=arbitrate).

Pure: the caller gives what the wire says (a View, built by the supervisor from the peers'
heartbeats), when an ARP/NDP answer for the VIP was last heard, and the time.

- A host that holds the VIP keeps it, unless it hears a holder that has the etcd lock (that
  one can reach etcd: etcd decides), or a holder without the lock that outranks it (two
  took it at once: the better rank stays).
- A host that does not hold it takes it only when, for DEAD_RATIO intervals, no holder's
  heartbeat and no ARP answer for the VIP came, and only in its turn: the candidate ranked r
  (0 is first) waits r more intervals, so that the first one's heartbeat ("bound") reaches the
  others before they act. Rank: lowest priority first (LinK's rule), then the host name.
- Silence is counted from the start of the outage at the earliest: a host that just lost etcd
  has not listened long enough to know that nobody holds the VIP.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from link.vocabulary.wire_views import HeardPeer
from link.wire.peers import DEAD_RATIO

Heard = HeardPeer  # a live peer heard on the wire for one VIP (the type the worker is sent)


@dataclass(frozen=True)
class View:
    """What the wire says about one VIP: the live peers that hold it, the live peers that may
    take it (eligible, this host left out), and when a holder was last heard (None: never)."""

    holders: tuple[Heard, ...] = ()
    candidates: tuple[Heard, ...] = ()
    holder_heard_at: float | None = None
    interval: float = 1.0


class Decision(str, enum.Enum):
    KEEP = "keep"  # holds it, nobody outranks it
    YIELD_TO_LOCK = "yield_to_lock"  # a holder with the etcd lock is heard
    YIELD_TO_RANK = "yield_to_rank"  # a holder without the lock outranks this host
    TAKE = "take"  # silence long enough, and this host's turn
    WAIT = "wait"  # a holder is heard, or not this host's turn yet
    IDLE = "idle"  # not eligible (FAILING): nothing to decide


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    sentence: str
    rank: int | None = None  # this host's place among the live eligible candidates (0: first)
    holder: str | None = None  # who holds the VIP, as far as the wire knows
    due: float | None = None  # when to decide again (the silence a standby waits for ends then)

    @property
    def holds(self) -> bool:
        return self.decision in (Decision.KEEP, Decision.TAKE)


def rank_key(priority: int, host: str) -> tuple[int, str]:
    return priority, host


def rank_of(host: str, priority: int, candidates: tuple[Heard, ...]) -> int:
    """This host's place among the candidates and itself (0: first)."""
    mine = rank_key(priority, host)
    return sum(1 for c in candidates if c.host != host and rank_key(c.priority, c.host) < mine)


def decide(*, host: str, priority: int, holding: bool, eligible: bool, view: View, now: float,
           fault_since: float, arp_heard_at: float | None) -> Verdict:
    if not eligible:
        return Verdict(Decision.IDLE, "not eligible: the wire does not decide", None)
    mine = rank_key(priority, host)
    rank = rank_of(host, priority, view.candidates)
    locked = [h for h in view.holders if h.lock]
    if holding:
        if locked:
            return Verdict(Decision.YIELD_TO_LOCK, f"{locked[0].host} holds the VIP with the etcd lock: yielding", rank,
                           locked[0].host)
        better = sorted((h for h in view.holders if rank_key(h.priority, h.host) < mine), key=lambda h: rank_key(h.priority, h.host))
        if better:
            return Verdict(Decision.YIELD_TO_RANK, f"{better[0].host} holds the VIP too and ranks first (priority "
                           f"{better[0].priority}, this host {priority}): yielding", rank, better[0].host)
        others = f" ({', '.join(h.host for h in view.holders)} also holds it, ranked after this host)" if view.holders else ""
        return Verdict(Decision.KEEP, f"keeping the VIP: no holder with the lock is heard{others}", rank, host)
    if view.holders:
        first = sorted(view.holders, key=lambda h: (not h.lock, rank_key(h.priority, h.host)))[0]
        return Verdict(Decision.WAIT, f"{first.host} holds the VIP (heard on the wire)", rank, first.host)
    heard = [t for t in (view.holder_heard_at, arp_heard_at, fault_since) if t is not None]
    quiet_since = max(heard)
    wait = (DEAD_RATIO + rank) * view.interval
    quiet = now - quiet_since
    if quiet < wait:
        return Verdict(Decision.WAIT, f"no holder heard for {quiet:.1f}s; rank {rank + 1} takes it after {wait:.1f}s", rank,
                       due=quiet_since + wait)
    return Verdict(Decision.TAKE, f"no holder heard and no ARP answer for {quiet:.1f}s; this host ranks {rank + 1} "
                   "among the live candidates: taking the VIP", rank, host)
