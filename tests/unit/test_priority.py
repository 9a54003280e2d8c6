"""Priorities and preemption in the election, against a fake etcd and a fake clock."""
from link.vocabulary.vip import lock_key
from link.worker.election import Election
from link.worker.fsm import Event
from tests.unit.fake_etcd import FakeEtcd
from tests.unit.fake_clock import Clock

VIP = "198.51.100.50/32"
LOCK = lock_key(VIP)


def host(store, clock, name, priority, preempt=True):
    election = Election(store.client(), VIP, name, ttl=2, retry=3, priority=priority, preempt=preempt,
                        preempt_delay=3.0, grace=0.5, clock=clock)
    election.watch(lambda: None)  # as the worker does: the candidates' cache follows etcd
    return election


def cycle(election, state="STANDBY", eligible=True):
    return election.run_cycle(eligible=eligible, state=state)


def test_a_free_lock_is_left_to_the_better_candidate_for_the_grace_period():
    store, clock = FakeEtcd(), Clock()
    best, worse = host(store, clock, "h1", 5), host(store, clock, "h2", 10)
    cycle(best, eligible=False)  # h1 publishes itself but cannot take the lock yet
    waiting = cycle(worse)
    assert waiting.event is None and "leaving it to h1 (priority 5 < 10)" in waiting.sentence
    assert cycle(best).event is Event.ELECTED


def test_the_worse_candidate_takes_the_lock_when_the_better_one_does_not():
    store, clock = FakeEtcd(), Clock()
    best, worse = host(store, clock, "h1", 5), host(store, clock, "h2", 10)
    cycle(best, eligible=False)
    assert cycle(worse).event is None
    clock.now += 0.6  # the grace period is over: at least one host must bind the VIP
    assert cycle(worse).event is Event.ELECTED


def test_failing_candidates_do_not_count_as_better():
    store, clock = FakeEtcd(), Clock()
    sick, healthy = host(store, clock, "h1", 5), host(store, clock, "h2", 10)
    cycle(sick, state="FAILING", eligible=False)
    assert cycle(healthy).event is Event.ELECTED


def test_the_holder_hands_over_to_a_better_candidate_after_the_preempt_delay():
    store, clock = FakeEtcd(), Clock()
    worse = host(store, clock, "h2", 10)
    assert cycle(worse).event is Event.ELECTED
    best = host(store, clock, "h1", 5)
    assert cycle(best).event is Event.DEMOTED  # joins as a standby
    first = cycle(worse, state="ACTIVATED")
    assert first.event is Event.ELECTED and "h1 has a better priority" in first.sentence
    clock.now += 2.9
    assert cycle(worse, state="ACTIVATED").event is Event.ELECTED
    clock.now += 0.2
    step = cycle(worse, state="ACTIVATED")
    assert step.event is Event.DEMOTED and step.hand_over and "handing over" in step.sentence


def test_a_flapping_better_candidate_restarts_the_delay():
    store, clock = FakeEtcd(), Clock()
    worse, best = host(store, clock, "h2", 10), host(store, clock, "h1", 5)
    cycle(worse)
    cycle(best)
    cycle(worse, state="ACTIVATED")
    clock.now += 2.0
    cycle(best, state="FAILING", eligible=False)  # it fails again before the delay ran out
    assert cycle(worse, state="ACTIVATED").event is Event.ELECTED
    cycle(best, state="STANDBY")
    cycle(worse, state="ACTIVATED")
    clock.now += 2.0
    assert not cycle(worse, state="ACTIVATED").hand_over  # 2 s since it came back, not 4


def test_no_preemption_when_disabled_or_equal():
    store, clock = FakeEtcd(), Clock()
    holder, equal = host(store, clock, "h2", 10, preempt=False), host(store, clock, "h3", 10)
    better = host(store, clock, "h1", 5)
    cycle(holder)
    cycle(equal)
    cycle(better)
    for _ in range(5):
        clock.now += 2
        result = cycle(holder, state="ACTIVATED")
        assert result.event is Event.ELECTED and not result.hand_over
    holder.preempt = True
    holder.priority = 5  # equal to the best: the current holder stays
    for _ in range(3):
        clock.now += 2
        assert not cycle(holder, state="ACTIVATED").hand_over


def test_priority_and_state_are_published_for_peers():
    store, clock = FakeEtcd(), Clock()
    h1 = host(store, clock, "h1", 7)
    cycle(h1, state="BOOTING")
    assert [c.to_api() for c in h1.candidates()] == [{"host": "h1", "priority": 7, "state": "BOOTING"}]
    h1.priority = 6
    cycle(h1, state="ACTIVATED")
    assert h1.candidates()[0].priority == 6 and h1.candidates()[0].state == "ACTIVATED"
    calls = len(h1.etcd.calls)
    cycle(h1, state="ACTIVATED")
    assert "put" not in h1.etcd.calls[calls:]  # nothing changed: nothing written
