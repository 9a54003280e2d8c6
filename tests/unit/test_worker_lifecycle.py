"""The worker process's lifecycle as a table (link.supervisor.worker_states), its one setter
(lifecycle.change), and the watchdog that replaces a hung worker, on the fake OS seam and a
fake clock."""
from __future__ import annotations

import logging
import pathlib
import re
import signal
from multiprocessing import Pipe

import pytest

from link.vocabulary import protocol
from link.config import load
from link.supervisor import lifecycle
from link.supervisor.lifecycle import Watchdog, hung_timeout
from link.supervisor.records import VipRecord
from link.supervisor.worker_states import TRANSITIONS, WorkerEvent, WorkerState, mermaid
from link.vocabulary.vip import VipSpec
from link.worker.supervisor_link import SupervisorChannel
from tests.unit.test_arbiter import booted_arbiter, request

ROOT = pathlib.Path(__file__).resolve().parents[2]
VIP = "198.51.100.50/32"
W, V = WorkerState, WorkerEvent


@pytest.fixture
def setup(tmp_path, monkeypatch):
    return booted_arbiter(tmp_path, monkeypatch)


def record(state: WorkerState = W.STOPPED) -> VipRecord:
    rec = VipRecord(spec=VipSpec(id="vip-1", ip=VIP), since=0.0)
    rec.worker_state = state
    return rec


# -- the table ------------------------------------------------------------------------------
def test_the_architecture_document_shows_the_table() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert mermaid() in doc, "docs/ARCHITECTURE.md's worker diagram is stale: python -m link.supervisor.worker_states"


def test_every_state_is_reached_and_left_and_stopping_is_never_respawned() -> None:
    reached, todo = {W.STOPPED}, [W.STOPPED]
    for _ in range(len(W) + 1):  # a breadth-first walk: bounded by the number of states
        todo = [dst for (src, _e), dst in TRANSITIONS.items() if src in todo and dst not in reached]
        reached.update(todo)
    assert reached == set(W)
    assert all(any(src is s and dst is not s for (src, _e), dst in TRANSITIONS.items()) for s in W if s is not W.STOPPED)
    assert not [e for (src, e), dst in TRANSITIONS.items() if src is W.STOPPING and dst is W.RUNNING]


def test_the_setter_logs_old_to_new_and_refuses_what_the_table_lacks(caplog) -> None:
    rec = record(W.RUNNING)
    with caplog.at_level(logging.INFO, logger="link.supervisor.lifecycle"):
        assert lifecycle.change(rec, V.SILENT, "no heartbeat", note="worker_hung")
        assert not lifecycle.change(rec, V.SPAWNED, "a second process?")
    assert rec.worker_state is W.HUNG
    lines = [r.getMessage() for r in caplog.records]
    assert any("worker RUNNING -> HUNG on silent: no heartbeat" in line for line in lines)
    assert any("not a transition" in line for line in lines)
    assert [e["event"] for e in rec.events] == ["worker_hung"]


def test_worker_state_is_set_only_by_the_setter() -> None:
    # Bare assignments anywhere else would bypass the table and the OLD -> NEW line.
    setters = [str(path.relative_to(ROOT)) for path in (ROOT / "link").rglob("*.py")
               if re.search(r"\.worker_state\s*=[^=]", path.read_text())]
    assert setters == ["link/supervisor/lifecycle.py"]


# -- the worker's side ----------------------------------------------------------------------
def test_the_channel_beats_only_when_nothing_else_went_up() -> None:
    ours, theirs = Pipe()
    channel = SupervisorChannel(ours, {cls: (lambda command: None) for cls in protocol.messages(protocol.Family.COMMAND)},
                                on_gone=lambda why: None)
    channel.heartbeat(3600.0)  # just started: nothing due
    assert not theirs.poll()
    channel.heartbeat(0.0)
    assert protocol.decode(theirs.recv(), protocol.Family.REPORT) == protocol.Heartbeat()
    channel.send(protocol.MetricsReport({}))
    theirs.recv()
    channel.heartbeat(3600.0)  # a report went up just now: no heartbeat needed
    assert not theirs.poll()


# -- the supervisor's watchdog --------------------------------------------------------------
def add(arb, ops):
    """A VIP whose worker has booted: it said something once (it is watched from then on)."""
    vip_id = request(arb, ops, "add", ip=VIP)["result"]["id"]
    pid = ops.spawned[-1][0]
    ops.children[pid].send({"type": "heartbeat"})
    arb.turn(max_wait=0.01)
    assert arb.vips[vip_id].heard_at is not None
    return arb.vips[vip_id], pid


def test_the_hung_timeout_is_three_leases_and_never_below_the_floor() -> None:
    assert hung_timeout(2) == 3 * 2 and hung_timeout(1) == lifecycle.HUNG_MIN
    assert Watchdog(ops=None, lease_ttl=3).timeout == 9  # type: ignore[arg-type]


def test_a_silent_worker_is_terminated_then_killed_then_respawned(setup, caplog) -> None:
    arb, ops, clock = setup
    rec, pid = add(arb, ops)
    ops.bound.add(VIP)
    timeout = arb.watchdog.timeout
    clock.now += timeout - 0.5
    arb.turn(max_wait=0.01)
    assert rec.worker_state is W.RUNNING and (pid, signal.SIGTERM) not in ops.killed
    clock.now += 1.0
    with caplog.at_level(logging.ERROR):
        arb.turn(max_wait=0.01)
    assert rec.worker_state is W.HUNG and ops.killed == [(pid, signal.SIGTERM)]
    assert rec.events[-1]["event"] == "worker_hung" and f"worker {pid} sent nothing" in rec.events[-1]["reason"]
    assert any("worker RUNNING -> HUNG" in r.getMessage() for r in caplog.records)
    assert request(arb, ops, "get", vip_id=rec.id)["result"]["worker"]["state"] == "HUNG"
    clock.now += arb.watchdog.grace + 1.0  # it did not exit on SIGTERM (SIGSTOPped)
    arb.turn(max_wait=0.01)
    assert ops.killed == [(pid, signal.SIGTERM), (pid, signal.SIGKILL)]
    ops.die(pid, -signal.SIGKILL)
    arb.turn(max_wait=0.01)
    assert rec.worker_state is W.BACKOFF and rec.pid is None and VIP in ops.removed and VIP not in ops.bound
    assert rec.error.endswith("(hung)") and rec.events[-1]["event"] == "worker_exited"
    clock.now += 1.0
    arb.turn(max_wait=0.01)
    assert rec.worker_state is W.RUNNING and rec.pid not in (None, pid) and len(ops.spawned) == 2


def test_a_worker_that_never_spoke_is_given_the_boot_allowance(setup) -> None:
    # Hundreds of workers forked at once each load gRPC first: slower than a lease.
    arb, ops, clock = setup
    vip_id = request(arb, ops, "add", ip=VIP)["result"]["id"]
    rec, pid = arb.vips[vip_id], ops.spawned[-1][0]
    clock.now += lifecycle.BOOT_SILENCE - 1
    arb.turn(max_wait=0.01)
    assert rec.worker_state is W.RUNNING and ops.killed == [] and arb.watchdog.timeout < lifecycle.BOOT_SILENCE - 1
    clock.now += 2
    arb.turn(max_wait=0.01)
    assert rec.worker_state is W.HUNG and ops.killed == [(pid, signal.SIGTERM)]
    assert "since it started" in rec.events[-1]["reason"]


def test_a_worker_that_sends_heartbeats_is_left_alone(setup) -> None:
    arb, ops, clock = setup
    rec, pid = add(arb, ops)
    for _ in range(10):  # ten timeouts' worth of time, a heartbeat every half timeout
        clock.now += arb.watchdog.timeout / 2
        ops.children[pid].send({"type": "heartbeat"})
        arb.turn(max_wait=0.01)
    assert rec.worker_state is W.RUNNING and ops.killed == []


def test_a_hung_worker_that_exits_on_sigterm_is_not_killed(setup) -> None:
    arb, ops, clock = setup
    rec, pid = add(arb, ops)
    clock.now += arb.watchdog.timeout + 1
    arb.turn(max_wait=0.01)
    ops.die(pid, 0)  # released its VIP and left
    arb.turn(max_wait=0.01)
    clock.now += arb.watchdog.grace + 1
    arb.turn(max_wait=0.01)
    assert ops.killed == [(pid, signal.SIGTERM)] and rec.kill_at is None
    assert rec.worker_state is W.RUNNING and rec.pid not in (None, pid)  # respawned after its backoff


def test_a_hung_worker_being_deleted_is_still_killed(setup) -> None:
    arb, ops, clock = setup
    rec, pid = add(arb, ops)
    clock.now += arb.watchdog.timeout + 1
    arb.turn(max_wait=0.01)
    ops.api_child.send({"id": 999, "op": "delete", "vip_id": rec.id})
    arb.turn(max_wait=0.01)
    assert rec.worker_state is W.STOPPING
    clock.now += arb.watchdog.grace + 1
    arb.turn(max_wait=0.01)
    assert (pid, signal.SIGKILL) in ops.killed
    ops.die(pid, -signal.SIGKILL)
    arb.turn(max_wait=0.01)
    assert ops.api_child.recv() == {"ok": True, "id": 999, "result": None} and rec.id not in arb.vips
    assert rec.worker_state is W.STOPPED


def test_the_lease_sets_the_timeout(tmp_path) -> None:
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path), "KEEPALIVE_INTERVAL": "4"})
    assert Watchdog(ops=None, lease_ttl=config.lease_ttl).timeout == 12  # type: ignore[arg-type]
