"""The supervisor's events and metrics (link.supervisor.observe) through the real Arbiter, with
its OS/process calls faked (the fakes of test_arbiter) and worker messages sent on real pipes."""
from __future__ import annotations

import signal

import pytest

from link.supervisor import records
from link.supervisor.worker_states import WorkerState
from link.supervisor.lifecycle import MAX_BOOT_FAILURES
from link.vocabulary.exit_codes import WORKER_BOOT_FAILED as EXIT_BOOT_FAILED
from link.vocabulary.counters import add
from tests.unit.test_arbiter import booted_arbiter, request

VIP = "198.51.100.50/32"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    arb, ops, clock = booted_arbiter(tmp_path, monkeypatch)
    vip_id = request(arb, ops, "add", ip=VIP)["result"]["id"]
    return arb, ops, clock, vip_id


def report(arb, ops, pid, state, frm, event=None, reason="", **more):
    ops.children[pid].send({"type": "state", "state": state, "from": frm, "event": event, "since": 1700000000.5,
                            "holder": "h1", "reason": reason, **more})
    arb.turn(max_wait=0.01)


def numbers(packets=3, renewals=10, elected=1):
    return {"transitions": {"elected": elected}, "announce_packets": packets,
            "health": {"results": {"pass": 4, "fail": 1}, "seconds": 0.25, "count": 5},
            "etcd": {"requests": {"Range": 7}, "seconds": {"Range": 0.07}, "errors": {"Txn": {"unavailable": 2}},
                     "lease_grants": 1, "lease_renewals": renewals}}


def test_each_transition_is_an_event_with_from_to_event_and_reason(setup):
    arb, ops, _, vip_id = setup
    pid = arb.vips[vip_id].pid
    report(arb, ops, pid, "BOOTING", None)  # the worker's first report: no transition
    report(arb, ops, pid, "STANDBY", "BOOTING", "demoted", "h2 holds the lock")
    report(arb, ops, pid, "STANDBY", "STANDBY", "demoted", "h3 holds the lock")  # the holder changed, not the state
    report(arb, ops, pid, "ACTIVATED", "STANDBY", "elected", "took the free lock")
    events = request(arb, ops, "events", vip_id=vip_id)["result"]
    assert [(e["from"], e["to"], e["event"], e["reason"], e["source"]) for e in events] == [
        ("BOOTING", "STANDBY", "demoted", "h2 holds the lock", "worker"),
        ("STANDBY", "ACTIVATED", "elected", "took the free lock", "worker"),
    ]
    assert events[0]["time"] == "2023-11-14T22:13:20.500Z"  # the worker's own time of the transition


def test_events_keep_the_last_hundred_newest_last(setup):
    arb, ops, _, vip_id = setup
    pid = arb.vips[vip_id].pid
    state = "BOOTING"
    for n in range(130):
        new = "ACTIVATED" if state != "ACTIVATED" else "STANDBY"
        report(arb, ops, pid, new, state, "elected" if new == "ACTIVATED" else "demoted", f"change {n}")
        state = new
    events = request(arb, ops, "events", vip_id=vip_id)["result"]
    assert len(events) == records.MAX_EVENTS == 100
    assert events[0]["reason"] == "change 30" and events[-1]["reason"] == "change 129"


def test_events_of_an_unknown_vip_is_404(setup):
    arb, ops, _, _ = setup
    answer = request(arb, ops, "events", vip_id="vip-00000000-0000-4000-8000-000000000000")
    assert answer["ok"] is False and answer["status"] == 404


def test_the_supervisor_records_a_crash_and_the_respawn(setup):
    arb, ops, clock, vip_id = setup
    record = arb.vips[vip_id]
    pid = record.pid
    report(arb, ops, pid, "ACTIVATED", "BOOTING", "elected", "took the free lock")
    clock.now += 60
    ops.die(pid, -signal.SIGKILL)
    arb.turn(max_wait=0.01)
    clock.now += 1.0
    arb.turn(max_wait=0.01)
    assert record.pid not in (None, pid)
    events = request(arb, ops, "events", vip_id=vip_id)["result"]
    crash, respawn = events[-2], events[-1]
    assert (crash["event"], crash["from"], crash["to"], crash["source"]) == ("worker_exited", "ACTIVATED", "BOOTING", "supervisor")
    assert f"worker {pid} exited" in crash["reason"] and "-9" in crash["reason"]
    assert respawn["event"] == "worker_respawned" and str(record.pid) in respawn["reason"]


def test_a_fatal_worker_is_an_event(setup):
    arb, ops, clock, vip_id = setup
    record = arb.vips[vip_id]
    for _ in range(MAX_BOOT_FAILURES):
        pid = record.pid
        ops.children[pid].send({"type": "boot_failed", "error": "interface 'eth9' does not exist"})
        arb.turn(max_wait=0.01)
        ops.die(pid, EXIT_BOOT_FAILED)
        arb.turn(max_wait=0.01)
        clock.now += 60
        arb.turn(max_wait=0.01)
    assert record.worker_state == WorkerState.FATAL
    last = request(arb, ops, "events", vip_id=vip_id)["result"][-1]
    assert last["event"] == "worker_fatal" and "eth9" in last["reason"]


def test_metrics_are_the_workers_latest_numbers_with_the_supervisors(setup):
    arb, ops, _, vip_id = setup
    pid = arb.vips[vip_id].pid
    report(arb, ops, pid, "ACTIVATED", "BOOTING", "elected", "took the free lock", metrics=numbers(packets=1))
    ops.children[pid].send({"type": "metrics", "metrics": numbers(packets=3)})
    arb.turn(max_wait=0.01)
    result = request(arb, ops, "metrics")["result"]
    assert result["workers"] == 1
    (vip,) = result["vips"]
    assert (vip["id"], vip["ip"], vip["status"], vip["since"], vip["restarts"]) == (vip_id, VIP, "ACTIVATED", 1700000000.5, 0)
    assert vip["metrics"] == numbers(packets=3)


def test_counters_keep_growing_across_a_respawn(setup):
    arb, ops, clock, vip_id = setup
    record = arb.vips[vip_id]
    pid = record.pid
    ops.children[pid].send({"type": "metrics", "metrics": numbers(packets=3, renewals=10)})
    arb.turn(max_wait=0.01)
    clock.now += 60
    ops.die(pid, -signal.SIGKILL)
    arb.turn(max_wait=0.01)
    clock.now += 1.0
    arb.turn(max_wait=0.01)
    ops.children[record.pid].send({"type": "metrics", "metrics": numbers(packets=6, renewals=1)})
    arb.turn(max_wait=0.01)
    (vip,) = request(arb, ops, "metrics")["result"]["vips"]
    assert vip["restarts"] == 1
    assert vip["metrics"]["announce_packets"] == 9 and vip["metrics"]["etcd"]["lease_renewals"] == 11
    assert vip["metrics"]["etcd"]["errors"] == {"Txn": {"unavailable": 4}}


def test_add_sums_nested_numbers_and_keeps_the_rest():
    assert add({"a": 1, "b": {"c": 2.5}, "s": "x"}, {"a": 2, "b": {"c": 1, "d": 1}, "s": "y"}) == {
        "a": 3, "b": {"c": 3.5, "d": 1}, "s": "y"}
    assert add({}, numbers()) == numbers()
