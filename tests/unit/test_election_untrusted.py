"""The election against keys anyone with write access to etcd can put: malformed candidates,
keys without a lease, hostile lock values. Nothing crashes a cycle, nothing without a lease
counts, each bad key is logged once."""
from __future__ import annotations

import logging

import pytest

from link.api.metrics import render
from link.vocabulary.vip import candidate_key, lock_key
from link.worker.candidates import candidate_info_key, encode
from link.worker.election import Election
from link.worker.fsm import Event
from link.worker.metrics import WorkerMetrics
from tests.unit.fake_clock import Clock
from tests.unit.fake_etcd import FakeEtcd
from tests.unit.test_etcd_values import HOSTILE_VALUES

VIP = "198.51.100.50/32"
LOCK = lock_key(VIP)
LOGGERS = "link.worker"


def host(store: FakeEtcd, clock: Clock, name: str, priority: int = 10) -> Election:
    election = Election(store.client(), VIP, name, ttl=2, retry=3, priority=priority, preempt=True,
                        preempt_delay=3.0, grace=0.5, clock=clock)
    election.watch(lambda: None)  # as the worker does: the candidates' cache follows etcd
    return election


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_hostile_candidate_values_neither_crash_nor_count_and_are_logged_once(caplog):
    store, clock = FakeEtcd(), Clock()
    h1 = host(store, clock, "h1")
    assert h1.run_cycle().event is Event.ELECTED
    lease, _ = store.client().grant_lease(60)  # on a lease: they are refused for what they say
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        for n, value in enumerate(HOSTILE_VALUES):
            # As the adapter reads them: invalid UTF-8 escaped.
            text = value.decode(errors="backslashreplace") if isinstance(value, bytes) else value
            store.put_raw(candidate_info_key(VIP, f"x{n}"), text, lease=lease)
        for _ in range(5):
            clock.now += 1.0
            result = h1.run_cycle(state="ACTIVATED")
            assert result.event is Event.ELECTED and not result.hand_over, result.sentence
    assert [c.host for c in h1.candidates()] == ["h1"]
    bad = warnings(caplog)
    assert len(bad) == len(HOSTILE_VALUES), bad  # one line per key, not one per cycle
    assert all("not a candidate" in line and "\n" not in line for line in bad)


def test_the_issues_value_1e400_does_not_stop_a_standby_from_taking_over(caplog):
    store, clock = FakeEtcd(), Clock()
    h1, h2 = host(store, clock, "h1"), host(store, clock, "h2")
    h1.run_cycle()
    h2.run_cycle()
    store.put_raw(candidate_info_key(VIP, "x"), '{"priority":1e400,"state":"STANDBY"}')
    store.expire(h1.lease_id)
    assert h2.run_cycle().event is Event.ELECTED


def test_a_leaseless_better_candidate_is_no_rival(caplog):
    store, clock = FakeEtcd(), Clock()
    holder = host(store, clock, "h1", priority=10)
    assert holder.run_cycle().event is Event.ELECTED
    # Written without a lease (etcdctl put): it names no live host, and would never expire.
    store.put_raw(candidate_info_key(VIP, "ghost"), encode(1, "STANDBY"))
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        for _ in range(6):
            clock.now += 1.0  # twice the preempt delay
            result = holder.run_cycle(state="ACTIVATED")
            assert result.event is Event.ELECTED and not result.hand_over, result.sentence
    assert "better priority" not in result.sentence
    assert [line for line in warnings(caplog) if "ghost" in line and "not on a lease" in line] == warnings(caplog)
    assert len(warnings(caplog)) == 1
    # The same candidate on a lease is a rival: the holder hands over after the delay.
    lease, _ = store.client().grant_lease(2)
    store.put_raw(candidate_info_key(VIP, "ghost"), encode(1, "STANDBY"), lease=lease)
    holder.candidates_changed()
    results = []
    for _ in range(5):
        results.append(holder.run_cycle(state="ACTIVATED"))
        clock.now += 1.0
    assert any(r.hand_over for r in results)


def test_a_free_lock_is_not_left_to_a_leaseless_candidate():
    store, clock = FakeEtcd(), Clock()
    store.put_raw(candidate_info_key(VIP, "ghost"), encode(1, "STANDBY"))
    h2 = host(store, clock, "h2", priority=10)
    result = h2.run_cycle()
    assert result.event is Event.ELECTED and "took the free lock" in result.sentence


def test_leaseless_competitors_are_nobody():
    store, clock = FakeEtcd(), Clock()
    h1 = host(store, clock, "h1")
    h1.run_cycle()
    store.put_raw(candidate_key(VIP, "ghost"), "ghost")
    lease, _ = store.client().grant_lease(2)
    store.put_raw(candidate_key(VIP, "bad"), "bad\nname", lease=lease)
    assert h1.competitors() == []
    h2 = host(store, clock, "h2")
    h2.run_cycle()
    assert h1.competitors() == ["h2"]


def test_a_leaseless_lock_is_taken_over_with_a_revision_compare_and_counted(caplog):
    store, clock = FakeEtcd(), Clock()
    store.put_raw(LOCK, "ghost")
    h1, h2 = host(store, clock, "h1"), host(store, clock, "h2")
    with caplog.at_level(logging.WARNING, logger=LOGGERS):
        taken = h1.run_cycle()
        assert taken.event is Event.ELECTED and "not on a lease" in taken.sentence, taken.sentence
        assert (store.keys[LOCK].value, store.keys[LOCK].lease) == ("h1", h1.lease_id)
        assert h1.leaseless_takeovers == 1 and h1.counters() == {"leaseless_lock_takeovers": 1}
        other = h2.run_cycle()
        assert other.event is Event.DEMOTED and other.holder == "h1"
        assert h1.run_cycle().event is Event.ELECTED
    assert len([line for line in warnings(caplog) if "not on a lease" in line]) == 1
    # The counter reaches GET /metrics through the worker's snapshot.
    snapshot = WorkerMetrics().snapshot(None, 0, h1.counters())
    text = render({"workers": 1, "vips": [{"id": "vip-1", "ip": VIP, "metrics": snapshot}]}, "test").decode()
    assert f'link_vip_leaseless_lock_takeovers_total{{id="vip-1",ip="{VIP}"}} 1.0' in text


def test_a_leaseless_lock_changed_meanwhile_is_not_taken_over():
    store, clock = FakeEtcd(), Clock()
    store.put_raw(LOCK, "ghost")
    h1, h2 = host(store, clock, "h1"), host(store, clock, "h2")
    h2.run_cycle()  # a standby with its lease
    client = h1.etcd
    real = client.replace_if_unchanged

    def h2_first(key, value, lease, mod_revision):
        # Between h1's read and its transaction, h2 takes the lock on its lease.
        store._put(LOCK, "h2", h2.lease_id)
        return real(key, value, lease, mod_revision)

    client.replace_if_unchanged = h2_first
    result = h1.run_cycle()
    assert result.event is Event.DEMOTED and result.holder == "h2", result.sentence
    assert (store.keys[LOCK].value, store.keys[LOCK].lease) == ("h2", h2.lease_id)
    assert h1.leaseless_takeovers == 0


def test_an_ineligible_host_does_not_take_a_leaseless_lock():
    store, clock = FakeEtcd(), Clock()
    store.put_raw(LOCK, "ghost")
    h1 = host(store, clock, "h1")
    result = h1.run_cycle(eligible=False, state="FAILING")
    assert result.event is None and "not on a lease" in result.sentence
    assert store.keys[LOCK].lease == 0


def test_a_lock_on_a_lease_stays_a_holder_and_its_value_is_shown_escaped():
    store, clock = FakeEtcd(), Clock()
    # A LinK v2 agent's lock: its hostname on its own lease.
    lease, _ = store.client().grant_lease(2)
    store.put_raw(LOCK, "linkv2-host", lease=lease)
    h1 = host(store, clock, "h1")
    result = h1.run_cycle()
    assert result.event is Event.DEMOTED and result.holder == "linkv2-host"
    assert store.keys[LOCK].value == "linkv2-host" and h1.leaseless_takeovers == 0
    store.put_raw(LOCK, "evil\n2026 forged log line", lease=lease)
    result = h1.run_cycle()
    assert result.event is Event.DEMOTED and "\n" not in result.sentence and "\n" not in result.holder


def test_every_key_link_writes_is_on_a_lease():
    store, clock = FakeEtcd(), Clock()
    h1, h2 = host(store, clock, "h1", priority=5), host(store, clock, "h2")
    h2.run_cycle()
    h1.run_cycle()
    for _ in range(6):
        clock.now += 1.0
        h2.run_cycle(state="ACTIVATED")
        h1.run_cycle()
    assert store.keys and all(info.lease for info in store.keys.values()), store.keys
