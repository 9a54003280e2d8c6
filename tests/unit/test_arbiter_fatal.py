"""FATAL is not forever: the supervisor tries a FATAL worker again after FATAL_RETRY, and says so."""
from __future__ import annotations

import logging

import pytest

from link.supervisor.worker_states import WorkerState
from link.supervisor.lifecycle import BOOT_WINDOW, FATAL_RETRY, MAX_BOOT_FAILURES, fatal_retry_delay
from link.vocabulary.exit_codes import WORKER_BOOT_FAILED as EXIT_BOOT_FAILED
from tests.unit.test_arbiter import booted_arbiter, request

VIP = "198.51.100.50/32"


@pytest.fixture
def setup(tmp_path, monkeypatch):
    return booted_arbiter(tmp_path, monkeypatch)


def fail_boot(arb, ops, record, error="interface 'eth9' does not exist"):
    pid = record.pid
    ops.children[pid].send({"type": "boot_failed", "error": error})
    arb.turn(max_wait=0.01)
    ops.die(pid, EXIT_BOOT_FAILED)
    arb.turn(max_wait=0.01)


def make_fatal(arb, ops, clock):
    vip_id = request(arb, ops, "add", ip=VIP)["result"]["id"]
    record = arb.vips[vip_id]
    for _ in range(MAX_BOOT_FAILURES - 1):
        fail_boot(arb, ops, record)
        clock.now += 60  # past any boot backoff
        arb.turn(max_wait=0.01)
    fail_boot(arb, ops, record)
    return vip_id, record


def events(arb, ops, vip_id):
    return request(arb, ops, "events", vip_id=vip_id)["result"]


def test_a_fatal_worker_is_tried_again_after_the_long_backoff_and_says_so(setup, caplog):
    arb, ops, clock = setup
    with caplog.at_level(logging.INFO, logger="link.supervisor.arbiter"):
        vip_id, record = make_fatal(arb, ops, clock)
        assert record.worker_state == WorkerState.FATAL and record.pid is None
        fatal = [e for e in events(arb, ops, vip_id) if e["event"] == "worker_fatal"]
        assert len(fatal) == 1 and "retrying in" in fatal[0]["reason"] and "eth9" in fatal[0]["reason"]
        assert any("retrying in" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
        spawned = len(ops.spawned)

        clock.now += FATAL_RETRY * 0.8 - 1  # before the earliest jittered retry: nothing happens
        arb.turn(max_wait=0.01)
        assert len(ops.spawned) == spawned and record.worker_state == WorkerState.FATAL

        clock.now += FATAL_RETRY * 0.4 + 2  # after the latest one: tried again
        arb.turn(max_wait=0.01)
    assert len(ops.spawned) == spawned + 1 and record.worker_state == WorkerState.RUNNING and record.pid is not None
    retried = [e for e in events(arb, ops, vip_id) if e["event"] == "worker_fatal_retry"]
    assert len(retried) == 1 and "retrying" in retried[0]["reason"]
    assert any("retrying the worker" in r.getMessage() for r in caplog.records)
    assert request(arb, ops, "get", vip_id=vip_id)["result"]["worker"]["state"] == WorkerState.RUNNING

    # The cause is gone: the worker runs past the boot window, and a later crash is an
    # ordinary one (short backoff), not a FATAL.
    clock.now += BOOT_WINDOW + 60
    ops.die(record.pid, 1)
    arb.turn(max_wait=0.01)
    assert record.worker_state == WorkerState.BACKOFF and record.boot_failures == 0
    assert record.respawn_at is not None and record.respawn_at - clock.now < 1.0


def test_a_retry_that_fails_too_is_fatal_again_at_once(setup):
    arb, ops, clock = setup
    vip_id, record = make_fatal(arb, ops, clock)
    clock.now += FATAL_RETRY * 1.2 + 1
    arb.turn(max_wait=0.01)
    assert record.worker_state == WorkerState.RUNNING
    fail_boot(arb, ops, record)
    assert record.worker_state == WorkerState.FATAL and record.pid is None
    assert record.respawn_at is not None and record.respawn_at - clock.now >= FATAL_RETRY * 0.8
    assert len([e for e in events(arb, ops, vip_id) if e["event"] == "worker_fatal"]) == 2


def test_a_fatal_vip_can_be_deleted_and_is_not_retried(setup):
    arb, ops, clock = setup
    vip_id, record = make_fatal(arb, ops, clock)
    assert request(arb, ops, "delete", vip_id=vip_id) == {"id": request.ids, "ok": True, "result": None}
    spawned = len(ops.spawned)
    clock.now += FATAL_RETRY * 2
    arb.turn(max_wait=0.01)
    assert len(ops.spawned) == spawned and arb.vips == {}


def test_the_fatal_retry_is_minutes_and_jittered():
    low, high = fatal_retry_delay(rng=lambda a, b: a), fatal_retry_delay(rng=lambda a, b: b)
    assert 60 <= low < FATAL_RETRY < high
