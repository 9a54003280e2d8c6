"""The election cycle against a fake etcd: who gets elected, demoted, faulted, and why."""
from link.vocabulary.vip import candidate_key, lock_key
from link.worker.election import Election
from link.worker.fsm import Event
from tests.unit.fake_etcd import FakeEtcd

VIP = "198.51.100.50/32"
LOCK = lock_key(VIP)


def election(store: FakeEtcd, host: str, retry: int = 3) -> Election:
    return Election(store.client(), VIP, host, ttl=2, retry=retry)


def test_first_host_takes_the_free_lock_with_the_link_v2_key():
    store = FakeEtcd()
    h1 = election(store, "h1")
    result = h1.run_cycle()
    assert result.event is Event.ELECTED
    assert "took the free lock" in result.sentence and "granted lease" in result.sentence
    assert LOCK == "/link/default/198.51.100.50_32"
    assert store.keys[LOCK].value == "h1" and store.keys[LOCK].lease == h1.lease_id
    assert store.keys[candidate_key(VIP, "h1")].lease == h1.lease_id
    again = h1.run_cycle()
    assert (again.event, again.sentence) == (Event.ELECTED, "holds the lock")


def test_second_host_is_demoted_and_names_the_holder():
    store = FakeEtcd()
    h1, h2 = election(store, "h1"), election(store, "h2")
    h1.run_cycle()
    result = h2.run_cycle()
    assert result.event is Event.DEMOTED and result.holder == "h1"
    assert "h1 holds the lock" in result.sentence
    assert store.keys[LOCK].value == "h1"


def test_standby_takes_the_lock_when_the_holders_lease_expires():
    store = FakeEtcd()
    h1, h2 = election(store, "h1"), election(store, "h2")
    h1.run_cycle()
    h2.run_cycle()
    store.expire(h1.lease_id)
    result = h2.run_cycle()
    assert result.event is Event.ELECTED and store.keys[LOCK].value == "h2"
    # The old holder learns it lost the lock: its lease is gone, it gets a new one and is demoted.
    old = h1.run_cycle()
    assert old.event is Event.DEMOTED and "had expired" in old.sentence and old.holder == "h2"


def test_resign_revokes_the_lease_so_the_lock_is_free_at_once():
    store = FakeEtcd()
    h1, h2 = election(store, "h1"), election(store, "h2")
    h1.run_cycle()
    h2.run_cycle()
    assert "revoked lease" in h1.resign()
    assert LOCK not in store.keys and candidate_key(VIP, "h1") not in store.keys
    assert h2.run_cycle().event is Event.ELECTED


def test_resign_of_a_standby_leaves_the_holder_alone():
    store = FakeEtcd()
    h1, h2 = election(store, "h1"), election(store, "h2")
    h1.run_cycle()
    h2.run_cycle()
    h2.resign()
    assert store.keys[LOCK].value == "h1"


def test_fault_after_keepalive_retry_consecutive_failures():
    store = FakeEtcd()
    h1 = election(store, "h1", retry=3)
    h1.run_cycle()
    store.down = True
    first, second, third = h1.run_cycle(), h1.run_cycle(), h1.run_cycle()
    assert first.event is None and "(1/3)" in first.sentence
    assert second.event is None and "(2/3)" in second.sentence
    assert third.event is Event.FAULT and "3 times in a row" in third.sentence
    store.down = False
    assert h1.run_cycle().event is Event.ELECTED
    assert h1.failures == 0


def test_a_success_resets_the_failure_count():
    store = FakeEtcd()
    h1 = election(store, "h1", retry=2)
    store.down = True
    assert h1.run_cycle().event is None
    store.down = False
    assert h1.run_cycle().event is Event.ELECTED
    store.down = True
    assert h1.run_cycle().event is None  # 1/2 again, not a fault


def test_a_respawned_worker_takes_over_its_own_hosts_lock_in_place():
    store = FakeEtcd()
    dead = election(store, "h1")
    dead.run_cycle()
    old_lease = dead.lease_id
    reborn = election(store, "h1")
    result = reborn.run_cycle()
    assert result.event is Event.ELECTED and "previous worker of this host" in result.sentence
    assert store.keys[LOCK].lease == reborn.lease_id
    # The old lease is left to expire, not revoked: LinK v2 holds all of a host's locks on one
    # lease, and revoking it would free the locks of the host's other VIPs (a failover window).
    assert old_lease in store.leases


def test_taking_over_linkv2s_lock_leaves_its_other_locks_on_its_lease():
    store = FakeEtcd()
    linkv2_lease = store.client().grant_lease(15)[0]  # LinK v2: one lease per host, for every lock
    other = "/link/default/198.51.100.61_32"
    store.put_raw(LOCK, "h1", linkv2_lease)
    store.put_raw(other, "h1", linkv2_lease)
    result = election(store, "h1").run_cycle()
    assert result.event is Event.ELECTED and "took over the lock" in result.sentence
    assert (store.keys[other].value, store.keys[other].lease) == ("h1", linkv2_lease)


def test_another_hosts_lock_is_never_taken_over():
    store = FakeEtcd()
    h1, h2 = election(store, "h1"), election(store, "h2")
    h1.run_cycle()
    for _ in range(3):
        assert h2.run_cycle().event is Event.DEMOTED
    assert store.keys[LOCK].lease == h1.lease_id


def test_an_ineligible_host_does_not_take_a_free_lock():
    store = FakeEtcd()
    h1 = election(store, "h1")
    result = h1.run_cycle(eligible=False)
    assert result.event is None and LOCK not in store.keys


def test_give_up_lock_keeps_the_candidacy():
    store = FakeEtcd()
    h1 = election(store, "h1")
    h1.run_cycle()
    assert h1.give_up_lock() == "released the lock"
    assert LOCK not in store.keys and candidate_key(VIP, "h1") in store.keys
    assert h1.give_up_lock() == "did not hold the lock"


def test_only_one_of_many_racing_hosts_wins():
    store = FakeEtcd()
    hosts = [election(store, f"h{i}") for i in range(5)]
    events = [h.run_cycle().event for h in hosts]
    assert events.count(Event.ELECTED) == 1 and events.count(Event.DEMOTED) == 4


def test_competitors_are_the_other_live_candidates():
    store = FakeEtcd()
    h1, h2, h3 = election(store, "h1"), election(store, "h2"), election(store, "h3")
    for host in (h1, h2, h3):
        host.run_cycle()
    assert h1.competitors() == ["h2", "h3"]
    store.expire(h3.lease_id)
    assert h1.competitors() == ["h2"]
    h2.resign()
    assert h1.competitors() == []


def test_an_unchanged_lock_costs_one_call_per_cycle():
    store = FakeEtcd()
    h1 = election(store, "h1")
    h1.watch(lambda: None)
    h1.run_cycle()  # takes the lock: a write, so the next cycle reads again
    h1.run_cycle(lock_unchanged=True)
    h1.etcd.calls.clear()
    result = h1.run_cycle(lock_unchanged=True)
    assert result.event is Event.ELECTED and h1.etcd.calls == ["keepalive"]


def test_the_lock_is_read_again_when_the_watch_cannot_vouch_for_it():
    store = FakeEtcd()
    h1, h2 = election(store, "h1"), election(store, "h2")
    h1.run_cycle()
    h2.run_cycle()
    store.expire(h1.lease_id)
    h2.run_cycle()  # h2 takes the free lock
    h1.etcd.calls.clear()
    result = h1.run_cycle(lock_unchanged=True)  # its lease expired: the cache is not trusted
    assert result.event is Event.DEMOTED and "get" in h1.etcd.calls
