"""The Worker on its seams: the fake etcd, a fake clock and a binder that records what it is
told. Each host is a real Worker (its state machine, its election, its pipe to a stand-in
supervisor) driven one cycle at a time: FAULT_POLICY, trust-the-watch, the hold-off after a
hand-over; and build_worker wiring the real parts."""
from __future__ import annotations

import os
import select
import time
from multiprocessing import Pipe
from typing import Callable, Iterator

import pytest

from link.config import load
from link.vocabulary.protocol import HandOver
from link.vocabulary.vip import VipSpec, lock_key
from link.worker import main as worker_main
from link.worker.binders.runner import idle_status
from link.etcd.port import EtcdError
from link.worker.fsm import State
from link.worker.main import TRUSTED_CYCLES, Worker
from tests.unit.fake_clock import Clock
from tests.unit.fake_etcd import DEADLINE, DENIED, NO_LEADER, REFUSED, FakeEtcd, FakeEtcdClient

VIP = "198.51.100.50/32"
LOCK = lock_key(VIP)
RETRY = 3  # KEEPALIVE_RETRY


class RecordingBinder:
    """The Binder protocol, recording activate/deactivate instead of touching the host."""

    kind = "recording"

    def __init__(self, wake: Callable[[], None], priority: Callable[[], int]) -> None:
        self.calls: list[str] = []
        self.bound = False
        self.closed = False

    def activate(self, reason: str) -> None:
        self.calls.append("activate")
        self.bound = True

    def deactivate(self, state: str, reason: str) -> None:
        self.calls.append(f"deactivate {state}")
        self.bound = False

    def ensure(self) -> None:
        pass

    def next_due(self) -> float | None:
        return None

    def run_due(self) -> None:
        pass

    def status(self) -> dict:
        return idle_status()

    def packets_sent(self) -> int:
        return 0

    def close(self, wait: float = 0.0) -> None:
        self.closed = True


class Host:
    """One host's worker for the VIP, on the shared fake etcd and clock."""

    def __init__(self, store: FakeEtcd, clock: Clock, name: str, vip_fault_policy: str | None = None, **env: str) -> None:
        config = load({"INTERFACE": "lo", "HOSTNAME": name, "KEEPALIVE_RETRY": str(RETRY), **env})
        self.supervisor, theirs = Pipe()
        self.etcd: FakeEtcdClient = store.client()
        self.worker = Worker(config, VipSpec(id=f"vip-{name}", ip=VIP, fault_policy=vip_fault_policy), theirs, etcd=self.etcd, clock=clock,
                             binder=RecordingBinder)
        self.worker.boot()
        self.worker.start_election()
        binder = self.worker.binder
        assert isinstance(binder, RecordingBinder)
        self.binder = binder

    def cycle(self) -> State:
        self.worker.cycle()
        while self.supervisor.poll():  # the stand-in supervisor reads the reports
            self.supervisor.recv()
        return self.worker.fsm.state

    def woken(self) -> bool:
        """Whether the worker's loop would wake now and run a cycle at once for a lock change
        (taken as the loop takes it, so the next call tells only what came after)."""
        readable = select.select([self.worker._wake_r], [], [], 0)[0]
        if readable:
            os.read(self.worker._wake_r, 4096)
        changed, self.worker._lock_changed = self.worker._lock_changed, False
        return bool(readable) and changed

    def close(self) -> None:
        if self.supervisor.closed:
            return
        self.worker.shutdown()
        os.close(self.worker._wake_r)
        os.close(self.worker._wake_w)
        self.supervisor.close()


@pytest.fixture(autouse=True)
def no_process_title(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_main, "setproctitle", lambda title: None)


@pytest.fixture
def hosts() -> Iterator[Callable[..., Host]]:
    made: list[Host] = []

    def make(store: FakeEtcd, clock: Clock, name: str, vip_fault_policy: str | None = None, **env: str) -> Host:
        made.append(Host(store, clock, name, vip_fault_policy, **env))
        return made[-1]

    yield make
    for host in made:
        host.close()


def holder_and_standby(hosts: Callable[..., Host], policy: str) -> tuple[FakeEtcd, Clock, Host, Host]:
    store, clock = FakeEtcd(), Clock()
    h1, h2 = hosts(store, clock, "h1", FAULT_POLICY=policy), hosts(store, clock, "h2", FAULT_POLICY=policy)
    assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
    assert h1.binder.calls == ["activate"] and h2.binder.calls == ["deactivate STANDBY"]
    return store, clock, h1, h2


def fail_until_fault(h1: Host, h2: Host, clock: Clock) -> None:
    """RETRY - 1 failed cycles change nothing; the caller runs the RETRY-th."""
    for _ in range(RETRY - 1):
        clock.now += h1.worker.config.tick
        assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
    assert h1.binder.calls == ["activate"] and h2.binder.calls == ["deactivate STANDBY"]
    clock.now += h1.worker.config.tick


# ------------------------------------------------------------------ FAULT_POLICY
@pytest.mark.parametrize("error", [DEADLINE, REFUSED, NO_LEADER, DENIED], ids=["deadline", "refused", "no-leader", "denied"])
def test_fault_policy_activate_binds_on_every_host_then_one_holder_when_etcd_answers(hosts: Callable[..., Host], error: EtcdError) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "activate")
    store.fail(error)
    fail_until_fault(h1, h2, clock)
    assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.ACTIVATED  # LinK's rule: never a missing VIP
    assert h1.binder.bound and h2.binder.bound and h2.binder.calls[-1] == "activate"
    store.recover()
    assert h2.cycle() is State.STANDBY and not h2.binder.bound  # h1's lease still holds the lock
    assert h1.cycle() is State.ACTIVATED
    assert h1.binder.calls == ["activate", "activate"], "the holder announces again after the outage"
    assert store.keys[LOCK].value == "h1" and [h.binder.bound for h in (h1, h2)] == [True, False]


def test_fault_policy_activate_under_a_partition_the_cut_off_holder_unbinds_when_it_heals(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "activate")
    h1.etcd.fail(REFUSED)  # only h1 is cut off: h2 still reaches etcd
    fail_until_fault(h1, h2, clock)
    assert h1.cycle() is State.ACTIVATED and h1.binder.bound
    assert h1.worker.election is not None and h1.worker.election.lease_id is not None
    store.expire(h1.worker.election.lease_id)  # nobody refreshes it: etcd expires it
    assert h2.woken() and h2.cycle() is State.ACTIVATED and store.keys[LOCK].value == "h2"
    h1.etcd.recover()
    assert h1.cycle() is State.STANDBY  # a new lease, another host on the lock: it unbinds
    assert [h.binder.bound for h in (h1, h2)] == [False, True] and h1.binder.calls == ["activate", "deactivate STANDBY"]


def test_fault_policy_keep_leaves_every_host_as_it_was(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "keep")
    store.fail(DEADLINE)
    fail_until_fault(h1, h2, clock)
    for _ in range(3):
        assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
    assert h1.binder.calls == ["activate"] and h2.binder.calls == ["deactivate STANDBY"]
    store.recover()
    assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
    assert [h.binder.bound for h in (h1, h2)] == [True, False] and store.keys[LOCK].value == "h1"


def test_fault_policy_release_unbinds_then_the_lock_holder_binds_again(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "release")
    store.fail(REFUSED)
    fail_until_fault(h1, h2, clock)
    assert h1.cycle() is State.STANDBY and h2.cycle() is State.STANDBY
    assert h1.binder.calls == ["activate", "deactivate STANDBY"] and not h2.binder.bound
    store.recover()
    assert h2.cycle() is State.STANDBY and h1.cycle() is State.ACTIVATED  # h1's lease still holds the lock
    assert [h.binder.bound for h in (h1, h2)] == [True, False]
    assert h1.binder.calls == ["activate", "deactivate STANDBY", "activate"]


def test_a_vips_own_fault_policy_wins_over_the_agents(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1 = hosts(store, clock, "h1", vip_fault_policy="keep", FAULT_POLICY="activate")
    store.fail(DEADLINE)
    for _ in range(RETRY + 1):
        assert h1.cycle() is State.BOOTING
    assert h1.binder.calls == []


# ------------------------------------------------------------------ trust the watch
def cycle_calls(host: Host) -> list[str]:
    host.etcd.calls.clear()
    host.cycle()
    return list(host.etcd.calls)


def test_while_the_watch_is_up_an_idle_vip_only_refreshes_its_lease_and_a_change_wakes_it(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "activate")
    for host in (h1, h2):
        # Up to the next read (after its own writes, or the periodic one), then a full period.
        for _ in range(TRUSTED_CYCLES + 1):
            if "get" in cycle_calls(host):
                break
        calls = [cycle_calls(host) for _ in range(TRUSTED_CYCLES + 1)]
        assert calls[:TRUSTED_CYCLES] == [["keepalive"]] * TRUSTED_CYCLES, host.worker.config.hostname
        assert "get" in calls[-1], "every TRUSTED_CYCLES + 1 cycles the lock is read all the same"
    h2.woken()  # what woke it so far
    assert h1.worker.election is not None and h1.worker.election.lease_id is not None
    store.expire(h1.worker.election.lease_id)  # the holder's host died: its lease expired
    assert h2.woken(), "the watch wakes the standby's loop for a cycle now"
    assert "get" in cycle_calls(h2) and h2.worker.fsm.state is State.ACTIVATED


def test_while_the_watch_is_broken_every_cycle_reads_the_lock(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "activate")
    h2.etcd.break_watch()
    for _ in range(TRUSTED_CYCLES + 1):
        assert "get" in cycle_calls(h2) and h2.worker.fsm.state is State.STANDBY
    assert h2.woken()  # the break itself is told (the real adapter's on_change)
    assert h1.worker.election is not None and h1.worker.election.lease_id is not None
    store.expire(h1.worker.election.lease_id)
    assert not h2.woken()  # the broken watch missed the change: only the read finds it
    assert h2.cycle() is State.ACTIVATED and store.keys[LOCK].value == "h2"
    h2.etcd.break_watch(False)  # back: the next cycle reads once more, then trusts again
    assert "get" in cycle_calls(h2) and cycle_calls(h2) == ["keepalive"]


# ------------------------------------------------------------------ hold-off after a hand-over
def hold_off(host: Host) -> float:
    """What step_down's docstring promises: two lease periods."""
    return 2 * host.worker.config.lease_ttl


def test_after_a_failover_the_host_leaves_the_lock_for_two_leases_then_takes_it_back(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "activate")
    handed = clock.now
    answer = h1.worker.commands.hand_over(HandOver(request=7))
    assert (answer.request, answer.status) == (7, 204)
    assert h1.worker.fsm.state is State.STANDBY and not h1.binder.bound and LOCK not in store.keys
    h2.close()  # the standby it handed over to dies before taking the VIP: its lease is revoked
    clock.now = handed + hold_off(h1) - 0.01
    assert h1.cycle() is State.STANDBY and LOCK not in store.keys  # still leaving it to the others
    clock.now = handed + hold_off(h1)
    assert h1.cycle() is State.ACTIVATED and store.keys[LOCK].value == "h1" and h1.binder.bound


def test_during_the_hold_off_the_other_host_takes_the_vip(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, "activate")
    assert h1.worker.commands.hand_over(HandOver(request=1)).status == 204
    assert h1.cycle() is State.STANDBY
    assert h2.cycle() is State.ACTIVATED and store.keys[LOCK].value == "h2"
    clock.now += hold_off(h1)
    assert h1.cycle() is State.STANDBY and h2.cycle() is State.ACTIVATED
    assert [h.binder.bound for h in (h1, h2)] == [False, True]


def test_after_preempting_itself_the_holder_holds_off_too(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1 = hosts(store, clock, "h1", PRIORITY="20")
    assert h1.cycle() is State.ACTIVATED
    h2 = hosts(store, clock, "h2", PRIORITY="10")  # a better priority (lower) joins
    assert h2.cycle() is State.STANDBY and h1.cycle() is State.ACTIVATED
    clock.now += h1.worker.config.preempt_delay
    assert h1.cycle() is State.STANDBY and LOCK not in store.keys  # handed over: unbound, lock freed
    handed = clock.now
    h2.close()
    clock.now = handed + hold_off(h1) - 0.01
    assert h1.cycle() is State.STANDBY and LOCK not in store.keys
    clock.now = handed + hold_off(h1)
    assert h1.cycle() is State.ACTIVATED and h1.binder.calls == ["activate", "deactivate STANDBY", "activate"]


# ------------------------------------------------------------------ production wiring
def test_build_worker_wires_the_real_parts_without_connecting() -> None:
    from link.worker.binders.webhook import WebhookBinder
    from link.worker.entry import build_worker
    from link.etcd.grpc_client import GrpcEtcd

    # A closed port on loopback: nothing is called here (the channel connects on first use).
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "ETCD_HOSTS": "http://127.0.0.1:1",
                   "WEBHOOK_ALLOWED_URLS": "https://hooks.example.net"})
    spec = VipSpec(id="vip-1", ip=VIP, binder="webhook",
                   binder_settings={"url": "https://hooks.example.net/link", "secret": "s" * 32, "timeout": 5.0})
    ours, theirs = Pipe()
    worker = build_worker(config, spec, theirs)
    try:
        assert isinstance(worker.etcd, GrpcEtcd) and worker.clock is time.monotonic
        worker.boot()
        assert isinstance(worker.binder, WebhookBinder) and worker.binder.vip == VIP
        assert worker.etcd.call_stats()["requests"] == {}  # not one etcd call so far
        # INTERFACE is tracked (TRACK_INTERFACES): the kernel was asked about it at boot.
        assert worker.carrier is not None and worker.carrier.watch.names == ("lo",) and worker.carrier.why() == ""
    finally:
        if worker.carrier is not None:
            worker.carrier.close()
        if worker.binder is not None:
            worker.binder.close()
        worker.etcd.close()
        os.close(worker._wake_r)
        os.close(worker._wake_w)
        ours.close()
        theirs.close()
