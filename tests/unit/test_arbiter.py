"""The supervisor's loop with its OS/process calls faked: spawn, reap, respawn, FATAL, delete."""
from __future__ import annotations

import itertools
import signal
from multiprocessing import Pipe

import pytest

from link.config import load
from link.supervisor import arbiter as arbiter_mod
from link.supervisor.worker_states import WorkerState
from link.supervisor.arbiter import Arbiter
from link.supervisor.lifecycle import MAX_BOOT_FAILURES, backoff_delay
from link.supervisor.store import VipStore
from link.vocabulary.exit_codes import WORKER_BOOT_FAILED as EXIT_BOOT_FAILED
from tests.unit.fake_clock import Clock


class FakeOps:
    def __init__(self) -> None:
        self.pids = itertools.count(1000)
        self.children: dict[int, object] = {}  # pid -> the child's pipe end
        self.spawned: list[tuple[int, str]] = []
        self.exits: list[tuple[int, int]] = []
        self.killed: list[tuple[int, int]] = []
        self.removed: list[str] = []
        self.bound: set[str] = set()
        self.specs: dict = {}
        self.inbox: dict[int, list] = {}

    def answer_workers(self):
        """Play the workers' side: answer candidate reads, keep other orders for the test."""
        for pid, child in list(self.children.items()):
            if pid not in self.specs:
                continue
            while child.poll():
                message = child.recv()
                if message.get("type") == "candidates":
                    child.send({"type": "candidates_done", "request": message["request"],
                                "candidates": [{"host": "h1", "priority": 10, "state": "ACTIVATED"}], "error": ""})
                else:
                    self.inbox.setdefault(pid, []).append(message)

    def order(self, pid):
        """The next order the supervisor sent to worker `pid`."""
        self.answer_workers()
        return self.inbox[pid].pop(0)

    def spawn_worker(self, spec):
        pid = next(self.pids)
        parent, child = Pipe()
        self.children[pid] = child
        self.spawned.append((pid, spec.ip))
        self.specs[pid] = spec
        return pid, parent

    def spawn_api(self):
        pid = next(self.pids)
        parent, child = Pipe()
        self.children[pid] = child
        self.api_child = child
        return pid, parent

    def reap(self):
        exits, self.exits = self.exits, []
        return exits

    def kill(self, pid, sig):
        self.killed.append((pid, sig))

    def remove_address(self, vip):
        self.removed.append(vip)
        was = vip in self.bound
        self.bound.discard(vip)
        return was

    def die(self, pid, code):
        self.children.pop(pid).close()
        self.exits.append((pid, code))


def booted_arbiter(tmp_path, monkeypatch):
    """A real Arbiter over fake process calls, booted with an empty STATE_DIR."""
    monkeypatch.setattr(arbiter_mod, "setproctitle", lambda title: None)
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)})
    ops, clock = FakeOps(), Clock(100.0)
    arb = Arbiter(config, VipStore(str(tmp_path)), ops, clock=clock)
    arb.boot()
    return arb, ops, clock


@pytest.fixture
def setup(tmp_path, monkeypatch):
    return booted_arbiter(tmp_path, monkeypatch)


def request(arb, ops, op, **args):
    """Send one API request through the real pipe and run loop turns until it is answered."""
    request.ids = getattr(request, "ids", 0) + 1
    ops.api_child.send({"id": request.ids, "op": op, **args})
    for _ in range(20):
        arb.turn(max_wait=0.05)
        ops.answer_workers()
        if ops.api_child.poll():
            answer = ops.api_child.recv()
            assert answer["id"] == request.ids
            return answer
    return None


def test_add_forks_a_worker_and_persists(setup):
    arb, ops, _ = setup
    answer = request(arb, ops, "add", ip="198.51.100.50/32")
    assert answer["ok"] and answer["result"]["status"] == "BOOTING"
    vip_id = answer["result"]["id"]
    assert vip_id.startswith("vip-") and ops.spawned[-1][1] == "198.51.100.50/32"
    assert [v.ip for v in arb.store.load()] == ["198.51.100.50/32"]
    assert request(arb, ops, "get", vip_id=vip_id)["result"]["worker"]["state"] == WorkerState.RUNNING


@pytest.mark.parametrize("again", ["198.51.100.50/32", "198.51.100.50/24", "198.51.100.50/31"])
def test_duplicate_ip_is_409_and_nothing_changes(setup, again):
    # The same address under another prefix length is the same VIP (another lock key would
    # let two hosts bind it).
    arb, ops, _ = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    answer = request(arb, ops, "add", ip=again)
    assert not answer["ok"] and answer["status"] == 409 and "already configured" in answer["error"], answer
    assert "198.51.100.50/32" in answer["error"]
    assert len(arb.store.load()) == 1 and len(ops.spawned) == 1


def test_unknown_id_is_404(setup):
    arb, ops, _ = setup
    assert request(arb, ops, "get", vip_id="vip-nope")["status"] == 404
    assert request(arb, ops, "delete", vip_id="vip-nope")["status"] == 404


def test_worker_state_reports_are_relayed(setup):
    arb, ops, _ = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    pid = ops.spawned[-1][0]
    ops.children[pid].send({"type": "state", "state": "ACTIVATED", "event": "elected", "since": 1.0, "holder": "h1", "reason": "took the free lock"})
    got = request(arb, ops, "get", vip_id=vip_id)["result"]
    assert (got["status"], got["holder"]) == ("ACTIVATED", "h1")


def test_a_crashed_worker_is_respawned_after_backoff_and_its_vip_removed(setup):
    arb, ops, clock = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    pid = ops.spawned[-1][0]
    ops.bound.add("198.51.100.50/32")
    clock.now += 60  # ran for a minute: a crash, not a boot failure
    ops.die(pid, -signal.SIGKILL)
    arb.turn(max_wait=0.01)
    record = next(iter(arb.vips.values()))
    assert record.worker_state == WorkerState.BACKOFF and record.restarts == 1 and record.boot_failures == 0
    assert "198.51.100.50/32" in ops.removed and "198.51.100.50/32" not in ops.bound
    assert len(ops.spawned) == 1
    clock.now += 1.0
    arb.turn(max_wait=0.01)
    assert len(ops.spawned) == 2 and record.worker_state == WorkerState.RUNNING and record.pid != pid


def test_a_worker_that_cannot_boot_becomes_fatal(setup):
    arb, ops, clock = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    record = arb.vips[vip_id]
    for attempt in range(1, MAX_BOOT_FAILURES + 1):
        pid = record.pid
        ops.children[pid].send({"type": "boot_failed", "error": "interface 'eth9' does not exist"})
        arb.turn(max_wait=0.01)
        ops.die(pid, EXIT_BOOT_FAILED)
        arb.turn(max_wait=0.01)
        assert record.boot_failures == attempt
        clock.now += 60
        arb.turn(max_wait=0.01)
    assert record.worker_state == WorkerState.FATAL and record.pid is None
    assert len(ops.spawned) == MAX_BOOT_FAILURES
    got = request(arb, ops, "get", vip_id=vip_id)["result"]
    assert got["worker"]["state"] == "FATAL" and "eth9" in got["worker"]["error"]


def test_backoff_grows_and_is_jittered():
    low = [backoff_delay(n, rng=lambda a, b: a) for n in range(8)]
    high = [backoff_delay(n, rng=lambda a, b: b) for n in range(8)]
    assert low == sorted(low) and low[0] < 0.1 < high[0]
    assert max(high) <= 30.0


def test_delete_answers_only_after_the_worker_exited(setup):
    arb, ops, _ = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    pid = ops.spawned[-1][0]
    ops.api_child.send({"id": 999, "op": "delete", "vip_id": vip_id})
    arb.turn(max_wait=0.05)
    assert ops.order(pid) == {"type": "stop"}
    assert not ops.api_child.poll()  # not answered while the worker still holds the VIP
    assert request(arb, ops, "list")["result"][0]["worker"]["state"] == WorkerState.STOPPING
    ops.die(pid, 0)
    arb.turn(max_wait=0.05)
    answer = ops.api_child.recv()
    assert answer == {"id": 999, "ok": True, "result": None}
    assert arb.vips == {} and arb.store.load() == []
    assert len(ops.spawned) == 1  # not respawned


def test_restart_loads_the_persisted_vips_and_removes_stale_addresses(setup, tmp_path, monkeypatch):
    arb, ops, _ = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    request(arb, ops, "add", ip="198.51.100.51/32")
    ops2 = FakeOps()
    ops2.bound = {"198.51.100.50/32"}
    again = Arbiter(arb.config, VipStore(str(tmp_path)), ops2, clock=Clock(100.0))
    again.boot()
    assert [r.ip for r in again.vips.values()] == ["198.51.100.50/32", "198.51.100.51/32"]
    assert set(again.vips) == set(arb.vips)
    assert ops2.removed[:2] == ["198.51.100.50/32", "198.51.100.51/32"] and not ops2.bound
    assert [vip for _, vip in ops2.spawned] == ["198.51.100.50/32", "198.51.100.51/32"]


def test_sigterm_stops_every_worker_then_exits(setup):
    arb, ops, clock = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    request(arb, ops, "add", ip="198.51.100.51/32")
    arb.signals.append(signal.SIGTERM)
    assert arb.turn(max_wait=0.01)
    pids = [pid for pid, _ in ops.spawned]
    assert all(ops.order(pid) == {"type": "stop"} for pid in pids)
    assert (arb.api_pid, signal.SIGTERM) in ops.killed
    assert request(arb, ops, "list")["status"] == 503
    for pid in pids:
        ops.die(pid, 0)
    ops.exits.append((arb.api_pid, 0))
    assert arb.turn(max_wait=0.01) is False
    assert len(ops.spawned) == 2 and len(arb.store.load()) == 2  # VIPs kept for the next start


def test_workers_that_do_not_stop_are_killed_at_the_deadline(setup):
    arb, ops, clock = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    pid = ops.spawned[-1][0]
    arb.begin_stop("test")
    assert arb.turn(max_wait=0.01)
    clock.now += arbiter_mod.STOP_TIMEOUT + 1
    assert arb.turn(max_wait=0.01) is False
    assert (pid, signal.SIGKILL) in ops.killed and "198.51.100.50/32" in ops.removed


def test_api_that_dies_at_start_stops_the_agent(setup):
    arb, ops, clock = setup
    ops.exits.append((arb.api_pid, 1))
    arb.turn(max_wait=0.01)
    assert arb.stopping and arb.exit_code == 1


def test_update_replaces_checks_live_and_persists(setup):
    arb, ops, _ = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32", checks=[{"type": "TCP", "host": "198.51.100.20", "port": 5432}])["result"]["id"]
    pid = ops.spawned[-1][0]
    assert ops.specs[pid].checks[0]["port"] == 5432
    new = [{"type": "EXEC", "command": ["/bin/true"]}]
    answer = request(arb, ops, "update", vip_id=vip_id, checks=new)
    assert answer["ok"] and answer["result"]["checks"] == new
    assert ops.order(pid) == {"type": "settings", "spec": arb.vips[vip_id].spec.to_json()}
    assert len(ops.spawned) == 1  # same worker: nothing restarted
    assert arb.store.load()[0].checks == tuple(new)


def test_fault_policy_shows_the_agent_default_unless_set(setup):
    arb, ops, _ = setup
    plain = request(arb, ops, "add", ip="198.51.100.50/32")["result"]
    strict = request(arb, ops, "add", ip="198.51.100.51/32", fault_policy="release")["result"]
    assert (plain["fault_policy"], strict["fault_policy"]) == ("arbitrate", "release")


def test_failover_is_relayed_to_the_worker_and_its_answer_back(setup):
    arb, ops, _ = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    pid = ops.spawned[-1][0]
    ops.api_child.send({"id": 77, "op": "failover", "vip_id": vip_id})
    arb.turn(max_wait=0.05)
    order = ops.order(pid)
    assert order == {"type": "failover", "request": 77}
    ops.children[pid].send({"type": "failover_done", "request": 77, "status": 409, "error": "no other host competes"})
    arb.turn(max_wait=0.05)
    assert ops.api_child.recv() == {"id": 77, "ok": False, "status": 409, "error": "no other host competes"}
    ops.api_child.send({"id": 78, "op": "failover", "vip_id": vip_id})
    arb.turn(max_wait=0.05)
    ops.order(pid)
    ops.children[pid].send({"type": "failover_done", "request": 78, "status": 204, "error": ""})
    arb.turn(max_wait=0.05)
    assert ops.api_child.recv() == {"id": 78, "ok": True, "result": None}


def test_failover_of_a_worker_that_dies_meanwhile_is_answered(setup):
    arb, ops, clock = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    pid = ops.spawned[-1][0]
    ops.api_child.send({"id": 79, "op": "failover", "vip_id": vip_id})
    arb.turn(max_wait=0.05)
    ops.die(pid, -9)
    arb.turn(max_wait=0.05)
    answer = ops.api_child.recv()
    assert answer["id"] == 79 and answer["status"] == 503 and "exited during the failover" in answer["error"]


def test_get_shows_the_candidates_read_by_the_worker(setup):
    arb, ops, _ = setup
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    got = request(arb, ops, "get", vip_id=vip_id)["result"]
    assert got["candidates"] == [{"host": "h1", "priority": 10, "state": "ACTIVATED"}]
    assert got["priority"] == 10 and got["preempt"] is True


def test_signals_shift_the_host_priority_and_tell_every_worker(setup):
    arb, ops, _ = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    own = request(arb, ops, "add", ip="198.51.100.51/32", priority=3)["result"]
    pids = [pid for pid, _ in ops.spawned]
    arb.signals += [signal.SIGUSR2, signal.SIGUSR2, signal.SIGUSR1]
    arb.turn(max_wait=0.01)
    assert arb.priority == 11
    for pid in pids:
        assert [ops.order(pid)["priority"] for _ in range(3)] == [11, 12, 11]
    listed = {v["ip"]: v["priority"] for v in request(arb, ops, "list")["result"]}
    assert listed == {"198.51.100.50/32": 11, "198.51.100.51/32": 3} and own["priority"] == 3


def test_priority_is_clamped_to_0_255(setup):
    arb, _, _ = setup
    arb.set_priority(-4, "test")
    assert arb.priority == 0
    arb.set_priority(300, "test")
    assert arb.priority == 255


def test_sighup_rereads_priority_and_log_level_from_the_env_file(setup, tmp_path):
    arb, ops, _ = setup
    request(arb, ops, "add", ip="198.51.100.50/32")
    pid = ops.spawned[-1][0]
    env_file = tmp_path / "link.env"
    env_file.write_text("# edited by hand\nINTERFACE=lo\nexport PRIORITY=4\nLOGGER_LEVEL='debug'\n")
    arb.env_file = str(env_file)
    arb.signals.append(signal.SIGHUP)
    arb.turn(max_wait=0.01)
    assert arb.priority == 4 and arb.log_level == "DEBUG"
    assert {ops.order(pid)["type"], ops.order(pid)["type"]} == {"priority", "log_level"}
    env_file.write_text("PRIORITY=999\n")
    arb.signals.append(signal.SIGHUP)
    arb.turn(max_wait=0.01)
    assert arb.priority == 4  # a bad file changes nothing
