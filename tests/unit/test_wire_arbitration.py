"""link.wire.arbitration: what a host does with a VIP while etcd does not answer (a fake clock)."""
from __future__ import annotations

from link.wire.arbitration import Decision, Heard, View, decide, rank_of

T0 = 1000.0  # the outage began (the first failed cycle)


def verdict(view: View, *, now: float, holding: bool = False, eligible: bool = True, priority: int = 10,
            host: str = "h2", arp: float | None = None):
    return decide(host=host, priority=priority, holding=holding, eligible=eligible, view=view, now=now, fault_since=T0,
                  arp_heard_at=arp)


def test_a_holder_keeps_the_vip_when_nobody_else_holds_it() -> None:
    assert verdict(View(), now=T0 + 60, holding=True).decision is Decision.KEEP


def test_a_holder_yields_to_a_holder_with_the_lock_whatever_the_ranks() -> None:
    view = View(holders=(Heard("h9", 200, lock=True),))
    got = verdict(view, now=T0 + 1, holding=True, priority=0)
    assert got.decision is Decision.YIELD_TO_LOCK and got.holder == "h9"


def test_two_holders_without_the_lock_the_rank_decides() -> None:
    better, worse = Heard("h1", 10), Heard("h3", 10)  # same priority: the host name decides
    assert verdict(View(holders=(better,)), now=T0 + 1, holding=True).decision is Decision.YIELD_TO_RANK
    assert verdict(View(holders=(worse,)), now=T0 + 1, holding=True).decision is Decision.KEEP
    assert verdict(View(holders=(Heard("h1", 20),)), now=T0 + 1, holding=True).decision is Decision.KEEP  # lowest wins


def test_a_standby_waits_while_a_holder_is_heard() -> None:
    view = View(holders=(Heard("h1", 10),), holder_heard_at=T0 + 50)
    got = verdict(view, now=T0 + 100)
    assert got.decision is Decision.WAIT and got.holder == "h1"


def test_the_first_ranked_standby_takes_it_after_three_silent_intervals() -> None:
    view = View(candidates=(Heard("h3", 10),), holder_heard_at=T0 + 5, interval=1.0)
    assert verdict(view, now=T0 + 7.9).decision is Decision.WAIT
    got = verdict(view, now=T0 + 8.0)
    assert got.decision is Decision.TAKE and got.rank == 0 and got.holder == "h2"


def test_the_next_ranked_waits_one_more_interval_per_rank() -> None:
    view = View(candidates=(Heard("h1", 10), Heard("h0", 5)), holder_heard_at=T0, interval=1.0)
    assert rank_of("h2", 10, view.candidates) == 2
    assert verdict(view, now=T0 + 4.9).decision is Decision.WAIT
    assert verdict(view, now=T0 + 5.0).decision is Decision.TAKE


def test_silence_counts_from_the_outage_and_from_arp_answers() -> None:
    never = View(interval=1.0)  # no holder ever heard
    assert verdict(never, now=T0 + 2.9).decision is Decision.WAIT
    assert verdict(never, now=T0 + 3.0).decision is Decision.TAKE
    assert verdict(never, now=T0 + 10, arp=T0 + 8).decision is Decision.WAIT  # a host that does not speak the wire
    assert verdict(never, now=T0 + 11, arp=T0 + 8).decision is Decision.TAKE


def test_a_failing_host_decides_nothing() -> None:
    assert verdict(View(), now=T0 + 60, eligible=False).decision is Decision.IDLE


def test_a_waiting_standby_knows_when_to_decide_again() -> None:
    view = View(candidates=(Heard("h1", 10),), holder_heard_at=T0 + 5, interval=1.0)
    assert verdict(view, now=T0 + 6).due == T0 + 9  # rank 1 (h1 first): 3 + 1 intervals after the holder was heard
    assert verdict(view, now=T0 + 6, arp=T0 + 5.5).due == T0 + 9.5
    assert verdict(View(holders=(Heard("h1", 10),)), now=T0 + 6).due is None  # a holder is heard: nothing to time
