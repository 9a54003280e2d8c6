"""The boot gate (link.supervisor.boot_gate) in the real Arbiter, over the fake OS/process seam
and a fake clock: starts wait their turn, at most BOOT_CONCURRENCY booting, forks at BOOT_RATE."""
from __future__ import annotations

import signal
import uuid

import pytest

from link.config import ConfigError, load
from link.cli import output
from link.supervisor import arbiter as arbiter_mod
from link.supervisor.arbiter import Arbiter
from link.supervisor.lifecycle import BOOT_SILENCE
from link.supervisor.store import VipStore
from link.supervisor.worker_states import WorkerState
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import Event, State
from tests.unit.fake_clock import Clock
from tests.unit.test_arbiter import FakeOps, booted_arbiter, request


class TimedOps(FakeOps):
    """FakeOps that notes the fake clock's time of each fork."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.forked_at: list[float] = []

    def spawn_worker(self, spec):
        self.forked_at.append(self.clock.now)
        return super().spawn_worker(spec)


def ip(n: int) -> str:
    return f"198.51.100.{n + 1}/32" if n < 200 else f"203.0.113.{n - 199}/32"


def report(ops: FakeOps, pid: int, state: State = State.STANDBY) -> None:
    """The worker's side: a state report (its first election cycle done)."""
    ops.children[pid].send({"type": "state", "state": state.value, "event": Event.ELECTED.value if state is State.ACTIVATED
                            else None, "since": 1.0, "holder": None, "reason": "first cycle"})


def booting(arb: Arbiter, ops: FakeOps) -> list[int]:
    """Workers forked and alive that have not reported out of BOOTING."""
    return [r.pid for r in arb.vips.values() if r.pid is not None and r.pid in ops.children and r.status == State.BOOTING.value]


def run(arb: Arbiter, ops: TimedOps, clock: Clock, seconds: float, step: float = 0.01, boot_time: float = 0.5) -> None:
    """Move the fake clock in steps; each worker reports STANDBY `boot_time` after its fork,
    then a heartbeat every second (an idle worker). The number booting is checked after every turn."""
    for n in range(1, int(seconds / step) + 1):
        clock.now += step
        for record in list(arb.vips.values()):
            if record.pid not in ops.children:
                continue
            if record.status == State.BOOTING.value and clock.now - record.started_at >= boot_time:
                report(ops, record.pid)
            elif record.status != State.BOOTING.value and n % int(1.0 / step) == 0:
                ops.children[record.pid].send({"type": "heartbeat"})
        arb.turn(max_wait=0.0)
        assert len(booting(arb, ops)) <= arb.config.boot_concurrency


@pytest.fixture
def timed(tmp_path, monkeypatch):
    monkeypatch.setattr(arbiter_mod, "setproctitle", lambda title: None)
    clock = Clock(100.0)
    ops = TimedOps(clock)
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)})
    arb = Arbiter(config, VipStore(str(tmp_path)), ops, clock=clock)
    return arb, ops, clock


def assert_rate(forked_at: list[float], rate: float) -> None:
    """A token bucket of one second's worth: at most max(1, rate) + rate * t forks in any t seconds."""
    for i in range(len(forked_at)):
        for j in range(i, len(forked_at)):
            assert j - i + 1 <= max(1.0, rate) + rate * (forked_at[j] - forked_at[i]) + 1e-6, (i, j, forked_at[i], forked_at[j])


def test_a_hundred_posts_boot_a_bounded_number_at_a_time_at_the_rate_in_order(timed) -> None:
    arb, ops, clock = timed
    arb.boot()
    cap = arb.config.boot_concurrency
    answers = [request(arb, ops, "add", ip=ip(n)) for n in range(100)]
    # Every POST is answered at once, the VIP BOOTING as before; those beyond the slots are QUEUED.
    assert all(a["ok"] and a["result"]["status"] == State.BOOTING.value for a in answers)
    states = [a["result"]["worker"]["state"] for a in answers]
    assert states[:cap] == [WorkerState.RUNNING.value] * cap and set(states[cap:]) == {WorkerState.QUEUED.value}
    assert answers[-1]["result"]["worker"]["pid"] is None
    assert len(ops.spawned) == cap == len(booting(arb, ops))
    run(arb, ops, clock, seconds=10.0)
    assert [vip for _, vip in ops.spawned] == [ip(n) for n in range(100)]  # all started, in order of arrival
    assert all(r.worker_state is WorkerState.RUNNING for r in arb.vips.values())
    assert_rate(ops.forked_at, arb.config.boot_rate)
    assert ops.forked_at[-1] - ops.forked_at[0] >= (100 - max(1.0, arb.config.boot_rate)) / arb.config.boot_rate - 1e-6


def test_agent_start_with_vips_in_state_dir_goes_through_the_gate(timed, tmp_path) -> None:
    arb, ops, clock = timed
    VipStore(str(tmp_path)).save([VipSpec(id=f"vip-{uuid.uuid4()}", ip=ip(n)) for n in range(60)])
    arb.boot()
    cap = arb.config.boot_concurrency
    assert len(ops.spawned) == cap
    assert sum(r.worker_state is WorkerState.QUEUED for r in arb.vips.values()) == 60 - cap
    run(arb, ops, clock, seconds=6.0)
    assert [vip for _, vip in ops.spawned] == [ip(n) for n in range(60)]
    assert_rate(ops.forked_at, arb.config.boot_rate)


def test_a_queued_vip_deleted_never_forks_and_the_next_one_does(setup_full) -> None:
    arb, ops, clock, cap = setup_full
    queued = [request(arb, ops, "add", ip=ip(cap + n))["result"] for n in range(2)]
    assert [q["worker"]["state"] for q in queued] == [WorkerState.QUEUED.value] * 2
    # The client shows the worker's state beside the status: "BOOTING (worker QUEUED)".
    assert WorkerState.QUEUED.value in output._status(queued[0])
    answer = request(arb, ops, "delete", vip_id=queued[0]["id"])
    assert answer == {"id": answer["id"], "ok": True, "result": None}  # answered at once: no worker to wait for
    assert queued[0]["id"] not in arb.vips and [v.ip for v in arb.store.load()].count(queued[0]["ip"]) == 0
    report(ops, ops.spawned[0][0])  # a slot frees
    for _ in range(5):
        clock.now += 1.0
        arb.turn(max_wait=0.0)
    assert [vip for _, vip in ops.spawned][cap:] == [queued[1]["ip"]]


@pytest.fixture
def setup_full(tmp_path, monkeypatch):
    """An arbiter whose boot slots are all taken by workers that have not reported yet."""
    arb, ops, clock = booted_arbiter(tmp_path, monkeypatch)
    cap = arb.config.boot_concurrency
    for n in range(cap):
        request(arb, ops, "add", ip=ip(n))
    assert len(ops.spawned) == cap == len(booting(arb, ops))
    return arb, ops, clock, cap


def test_the_hung_watchdog_does_not_count_the_wait_in_the_queue(setup_full) -> None:
    arb, ops, clock, cap = setup_full
    vip_id = request(arb, ops, "add", ip=ip(cap))["result"]["id"]
    record = arb.vips[vip_id]
    for _ in range(int(BOOT_SILENCE) - 5):  # the booting ones say they are alive, not yet out of BOOTING
        clock.now += 1.0
        for pid, _vip in ops.spawned:
            ops.children[pid].send({"type": "heartbeat"})
        arb.turn(max_wait=0.0)
    assert record.worker_state is WorkerState.QUEUED and record.pid is None
    report(ops, ops.spawned[0][0])
    clock.now += 1.0
    arb.turn(max_wait=0.0)
    assert record.worker_state is WorkerState.RUNNING and record.pid == ops.spawned[-1][0]
    # BOOT_SILENCE counts from its fork, not from the POST: silent for less than that, not hung.
    for _ in range(int(BOOT_SILENCE) - 5):
        clock.now += 1.0
        arb.turn(max_wait=0.0)
    assert record.worker_state is WorkerState.RUNNING and (record.pid, signal.SIGTERM) not in ops.killed


def test_a_slot_held_by_a_worker_that_stays_booting_is_freed_after_boot_silence(setup_full) -> None:
    # etcd unreachable: a worker may stay BOOTING; the queue must not wait for it for good.
    arb, ops, clock, cap = setup_full
    request(arb, ops, "add", ip=ip(cap))
    for pid, _vip in ops.spawned:
        report(ops, pid, State.BOOTING)  # reported, still BOOTING: the slot stays taken
    clock.now += 1.0
    arb.turn(max_wait=0.0)
    assert len(ops.spawned) == cap
    clock.now += BOOT_SILENCE
    arb.turn(max_wait=0.0)
    assert [vip for _, vip in ops.spawned][cap:] == [ip(cap)]


def test_a_respawn_waits_for_the_gate_too(tmp_path, monkeypatch) -> None:
    arb, ops, clock = booted_arbiter(tmp_path, monkeypatch)
    cap = arb.config.boot_concurrency
    first = request(arb, ops, "add", ip=ip(0))["result"]["id"]
    report(ops, ops.spawned[0][0])
    for n in range(1, cap + 1):
        request(arb, ops, "add", ip=ip(n))
    assert len(booting(arb, ops)) == cap
    record = arb.vips[first]
    clock.now += 5.5  # ran past BOOT_WINDOW: a crash, respawned after a short backoff
    ops.die(record.pid, -signal.SIGKILL)
    arb.turn(max_wait=0.0)
    assert record.worker_state is WorkerState.BACKOFF
    clock.now += 1.0
    arb.turn(max_wait=0.0)
    assert record.worker_state is WorkerState.QUEUED and record.pid is None and len(ops.spawned) == cap + 1
    report(ops, ops.spawned[1][0])
    clock.now += 1.0
    arb.turn(max_wait=0.0)
    assert record.worker_state is WorkerState.RUNNING and ops.spawned[-1][1] == ip(0)


def test_stopping_the_agent_drops_the_queue(setup_full) -> None:
    arb, ops, clock, cap = setup_full
    vip_id = request(arb, ops, "add", ip=ip(cap))["result"]["id"]
    arb.begin_stop("test")
    for pid, _vip in ops.spawned:
        report(ops, pid)
    clock.now += 1.0
    arb.turn(max_wait=0.0)
    assert arb.vips[vip_id].worker_state is WorkerState.STOPPED and len(ops.spawned) == cap


# -- the settings -----------------------------------------------------------------------------
BASE = {"INTERFACE": "lo", "HOSTNAME": "h1"}


def test_boot_settings_defaults_and_values() -> None:
    config = load(BASE, check_interface=False)
    assert (config.boot_concurrency, config.boot_rate) == (16, 20.0)
    config = load({**BASE, "BOOT_CONCURRENCY": "4", "BOOT_RATE": "2.5"}, check_interface=False)
    assert (config.boot_concurrency, config.boot_rate) == (4, 2.5)


@pytest.mark.parametrize("name, value", [("BOOT_CONCURRENCY", "0"), ("BOOT_CONCURRENCY", "many"), ("BOOT_CONCURRENCY", "1001"),
                                         ("BOOT_RATE", "0"), ("BOOT_RATE", "fast"), ("BOOT_RATE", "nan"), ("BOOT_RATE", "-1")])
def test_bad_boot_settings_are_one_line_naming_the_variable(name, value) -> None:
    with pytest.raises(ConfigError) as caught:
        load({**BASE, name: value}, check_interface=False)
    message = str(caught.value)
    assert message.startswith(f"{name}=") and "\n" not in message


def test_with_every_slot_taken_the_loop_wakes_when_the_first_slot_runs_out() -> None:
    # A worker that keeps reporting BOOTING (etcd unreachable) neither exits nor frees its slot
    # by a report: the loop must still wake to give the slot away BOOT_SILENCE after the fork.
    from link.supervisor.boot_gate import BootGate
    from link.supervisor.records import VipRecord

    clock = Clock(100.0)
    records = {f"vip-{i}": VipRecord(spec=VipSpec(f"vip-{i}", f"198.51.100.{70 + i}/32"), since=0.0) for i in range(2)}
    forked: list[str] = []
    gate = BootGate(1, 20.0, clock, records, lambda record: forked.append(record.id))
    for record in records.values():
        record.worker_state = WorkerState.QUEUED
        gate.add(record)
    assert gate.pump() == 1 and forked == ["vip-0"]
    assert gate.next_due() == 100.0 + BOOT_SILENCE
    clock.now = 100.0 + BOOT_SILENCE
    assert gate.pump() == 1 and forked == ["vip-0", "vip-1"]
