"""The chaos test's judge (tests/chaos/judge.py) on made-up observations: what it lets pass
and what it calls a violation, so a green chaos run means something."""
from __future__ import annotations

from tests.chaos.judge import (AFTER_ETCD, CONVERGE, CUT_YIELD, DOUBLE_BOUND, GAP_BOUND, HEALTH_GRACE, NEIGH_BOUND,
                               OUTAGE_DOUBLE, SAMPLING_MARGIN, ClientView, Episode, Timeline, Window, find_violations,
                               gap_blame, longest_wrong_entry, neigh_violations)
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


# ---------------------------------------------------------------- issue 15: arbitrate and the client
def arbitrated(**kw) -> Timeline:
    return Timeline(policies={VIP: "arbitrate"}, **kw)


def test_under_arbitrate_one_short_double_per_etcd_outage_passes_and_a_long_or_second_one_fails():
    tl = arbitrated(etcd_out=[Window(50.0, 60.0)])
    assert find_violations([double(50.2, 50.2 + OUTAGE_DOUBLE)], tl, HOSTS) == []
    long = find_violations([double(50.2, 50.2 + OUTAGE_DOUBLE + SAMPLING_MARGIN + 0.3)], tl, HOSTS)
    assert len(long) == 1 and "while etcd was out" in long[0]
    second = find_violations([double(50.2, 50.5), double(55.0, 55.2)], tl, HOSTS)
    assert len(second) == 1 and "second double during one etcd outage" in second[0]
    # LinK's activate lets every host bind for the whole outage and its convergence.
    activate = Timeline(policies={VIP: "activate"}, etcd_out=[Window(50.0, 60.0)])
    assert find_violations([double(50.2, 60.0 + CONVERGE - 0.1)], activate, HOSTS) == []
    assert find_violations([double(50.2, 60.0 + CONVERGE - 0.1)], tl, HOSTS) != []


def test_under_arbitrate_each_outage_allows_its_own_double():
    tl = arbitrated(etcd_out=[Window(50.0, 60.0), Window(80.0, 90.0)])
    assert find_violations([double(50.2, 50.5), double(80.3, 80.6)], tl, HOSTS) == []


def test_under_arbitrate_etcd_back_means_one_holder_within_a_lease():
    tl = arbitrated(etcd_out=[Window(50.0, 60.0)])
    assert find_violations([double(60.2, 60.0 + AFTER_ETCD - 0.05)], tl, HOSTS) == []
    late = find_violations([double(60.2, 60.0 + AFTER_ETCD + 0.5)], tl, HOSTS)
    assert len(late) == 1 and "after etcd came back" in late[0]


def test_under_arbitrate_a_host_cut_from_etcd_yields_within_two_seconds():
    tl = arbitrated(etcd_cut={"h1": [Window(30.0, 40.0)]})
    assert find_violations([double(31.0, 31.0 + CUT_YIELD)], tl, HOSTS) == []
    kept = find_violations([double(31.0, 39.0)], tl, HOSTS)
    assert len(kept) == 1 and "cut from etcd kept the VIP" in kept[0]
    # activate: the cut host keeps the VIP as long as the cut lasts (LinK's rule).
    activate = Timeline(policies={VIP: "activate"}, etcd_cut={"h1": [Window(30.0, 40.0)]})
    assert find_violations([double(31.0, 39.0)], activate, HOSTS) == []
    # The cut must be one of the two holders' for it to excuse anything.
    other = Timeline(policies={VIP: "activate"}, etcd_cut={"h3": [Window(30.0, 40.0)]})
    assert find_violations([double(31.0, 39.0)], other, HOSTS) != []


def test_a_killed_etcd_member_excuses_a_double_under_link_v2_rules_only():
    # A worker whose client was on the killed member (every worker, while a killed leader is
    # replaced) is cut from etcd until it switches: keep and activate keep the VIP meanwhile.
    keep = Timeline(policies={VIP: "keep"}, member_down=[Window(30.0, 33.0)])
    assert find_violations([double(31.2, 33.1)], keep, HOSTS) == []
    assert find_violations([double(33.0 + CONVERGE + 0.5, 33.0 + CONVERGE + 0.5 + DOUBLE_BOUND + 0.5)], keep, HOSTS) != []
    # arbitrate: the cut host hears the lock holder on the wire and yields; no excuse.
    strict = arbitrated(member_down=[Window(30.0, 33.0)])
    assert find_violations([double(31.2, 33.1)], strict, HOSTS) != []


def test_a_host_cut_from_etcd_is_no_candidate_for_a_gap():
    tl = Timeline(etcd_cut={"h3": [Window(0.0, 100.0)]})
    tl.host_down["h1"] = [Window(0.0, 100.0)]
    tl.unhealthy[("h2", VIP)] = [Window(0.0, 100.0)]
    assert find_violations([gap(10.0, 30.0)], tl, HOSTS) == []
    assert find_violations([gap(10.0, 30.0)], Timeline(host_down={"h1": [Window(0.0, 100.0)]},
                                                       unhealthy={("h2", VIP): [Window(0.0, 100.0)]}), HOSTS) != []


MACS = {"h1": "02:00:00:00:01:01", "h2": "02:00:00:00:01:02", "h3": "02:00:00:00:01:03"}
ROGUE = "02:00:00:00:03:01"


def view(holders: list[tuple[float, set]], neigh: list[tuple[float, str | None]]) -> ClientView:
    return ClientView([(t, frozenset(h)) for t, h in holders], list(neigh))


def test_the_client_following_a_new_holder_within_the_bound_passes_and_a_stale_entry_fails():
    good = view([(0.0, {"h1"}), (10.0, set()), (11.5, {"h2"})],
                [(0.0, MACS["h1"]), (11.5 + NEIGH_BOUND - 0.5, MACS["h2"])])
    assert neigh_violations(VIP, good, MACS, Timeline(), end=30.0) == []
    # The split-brain story of issue 15: the old holder's MAC stays in the client after it let go.
    stale = view([(0.0, {"h1"}), (10.0, {"h1", "h2"}), (12.0, {"h2"})], [(0.0, MACS["h1"])])
    found = neigh_violations(VIP, stale, MACS, Timeline(), end=30.0)
    assert len(found) == 1 and "pointed at 02:00:00:00:01:01 (h1)" in found[0]
    assert f"{30.0 - 12.0 - NEIGH_BOUND:.3f}s" in found[0]


def test_a_rogue_claim_must_be_won_back_within_the_bound():
    tl = Timeline(rogue={VIP: [Window(20.0, 25.0)]})
    won = view([(0.0, {"h1"})], [(0.0, MACS["h1"]), (20.01, ROGUE), (21.5, MACS["h1"])])
    assert neigh_violations(VIP, won, MACS, tl, end=40.0) == []
    lost = view([(0.0, {"h1"})], [(0.0, MACS["h1"]), (20.01, ROGUE)])
    found = neigh_violations(VIP, lost, MACS, tl, end=40.0)
    assert len(found) == 1 and "a foreign machine" in found[0]
    assert longest_wrong_entry(lost, MACS, 40.0) > 19.0 and longest_wrong_entry(won, MACS, 40.0) < 1.5


def test_no_holder_or_no_client_entry_is_not_judged_and_any_holder_of_a_double_is_live():
    v = view([(0.0, {"h1"}), (5.0, set()), (20.0, {"h1", "h2"})], [(0.0, MACS["h1"]), (6.0, None), (22.0, MACS["h2"])])
    assert neigh_violations(VIP, v, MACS, Timeline(), end=60.0) == []


def test_the_chaos_run_judges_each_vip_under_its_own_policy_else_the_agents_configured_one(tmp_path):
    from types import SimpleNamespace

    from tests.chaos.engine import PLANS, Chaos

    chaos = Chaos.__new__(Chaos)  # no lab: only the policy lookup, through link's config loader
    host = SimpleNamespace(name="h1")
    chaos.lab = SimpleNamespace(hosts=[host], agent_env_for=lambda h, env: {
        "INTERFACE": "eth1", "HOSTNAME": h.name, "STATE_DIR": str(tmp_path), **env})
    own = {p.ip: p.fault_policy for p in PLANS if p.fault_policy}
    assert own, "a plan with its own policy"
    for policy in ("activate", "release"):
        chaos.env = {"FAULT_POLICY": policy}
        assert chaos.policies() == {p.ip: own.get(p.ip, policy) for p in PLANS}
