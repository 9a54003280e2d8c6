"""The chaos test's judge (tests/chaos/judge.py) on made-up observations: what it lets pass
and what it calls a violation, so a green chaos run means something."""
from __future__ import annotations

from tests.chaos.judge import (CONVERGE, DOUBLE_BOUND, GAP_BOUND, HEALTH_GRACE, Episode, Timeline, Window,
                               find_violations, gap_blame)
from tests.chaos.observer import Observer

HOSTS = ["h1", "h2", "h3"]
VIP = "198.51.100.50/32"


def gap(start: float, end: float) -> Episode:
    return Episode(VIP, "gap", start, end, frozenset(), 10)


def double(start: float, end: float) -> Episode:
    return Episode(VIP, "double", start, end, frozenset({"h1", "h2"}), 10)


def test_a_short_gap_passes_and_a_long_one_with_a_candidate_is_a_violation():
    tl = Timeline()
    assert find_violations([gap(10.0, 10.0 + GAP_BOUND - 0.1)], tl, HOSTS) == []
    found = find_violations([gap(10.0, 10.0 + GAP_BOUND + 0.5)], tl, HOSTS)
    assert len(found) == 1 and "no holder" in found[0]


def test_a_gap_while_no_host_is_a_candidate_is_excused_and_counted_from_the_first_candidate():
    tl = Timeline()
    for h in HOSTS:  # every check failing from 5 s to 20 s
        tl.unhealthy[(h, VIP)] = [Window(5.0, 20.0)]
    assert gap_blame(gap(10.0, 20.0 + HEALTH_GRACE + 1.0), tl, HOSTS) < 1.1
    assert find_violations([gap(10.0, 20.0 + HEALTH_GRACE + 1.0)], tl, HOSTS) == []
    assert find_violations([gap(10.0, 20.0 + HEALTH_GRACE + GAP_BOUND + 0.5)], tl, HOSTS) != []


def test_one_healthy_candidate_is_enough_to_blame_a_gap():
    tl = Timeline()
    tl.host_down["h1"] = [Window(0.0, 100.0)]
    tl.unhealthy[("h2", VIP)] = [Window(0.0, 100.0)]
    assert find_violations([gap(10.0, 10.0 + GAP_BOUND + 0.5)], tl, HOSTS) != []  # h3 could hold it
    tl.unhealthy[("h3", VIP)] = [Window(0.0, None)]
    assert find_violations([gap(10.0, 30.0)], tl, HOSTS) == []


def test_two_holders_pass_only_during_an_etcd_outage_and_its_convergence():
    tl = Timeline(etcd_out=[Window(50.0, 60.0)])
    assert find_violations([double(10.0, 10.0 + DOUBLE_BOUND - 0.1)], tl, HOSTS) == []
    assert find_violations([double(10.0, 10.0 + DOUBLE_BOUND + 0.2)], tl, HOSTS) != []
    assert find_violations([double(51.0, 60.0 + CONVERGE - 0.1)], tl, HOSTS) == []
    assert find_violations([gap(51.0, 60.0 + CONVERGE - 0.1)], tl, HOSTS) == []


def test_the_observer_drops_a_one_sample_double_and_keeps_a_lasting_one():
    obs = Observer.__new__(Observer)  # no thread, no lab: only its bookkeeping
    obs.episodes, obs._open = [], {}
    obs._feed(VIP, 1.000, {"h1"})
    obs._feed(VIP, 1.005, {"h1", "h2"})  # one sample: a hand-over read host by host
    obs._feed(VIP, 1.010, {"h2"})
    assert obs.episodes == []
    obs._feed(VIP, 2.000, {"h1", "h2"})
    obs._feed(VIP, 2.005, {"h1", "h2"})
    obs._feed(VIP, 2.500, set())
    obs._feed(VIP, 2.600, {"h3"})
    assert [(e.kind, e.start, e.end) for e in obs.episodes] == [("double", 2.000, 2.500), ("gap", 2.500, 2.600)]
