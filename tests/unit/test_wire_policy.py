"""FAULT_POLICY=arbitrate in the worker (link.worker.wire_policy): real Workers on the fake etcd,
a fake clock, the supervisor's view sent through the real pipe, and a fake ARP capture."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from link.vocabulary import protocol
from link.vocabulary.protocol import Reannounce, WireReport, WireView
from link.vocabulary.wire_views import HeardPeer
from link.worker.fsm import State
from tests.unit.fake_clock import Clock
from tests.unit.fake_etcd import DEADLINE, REFUSED, FakeEtcd
from tests.unit.test_worker_seams import LOCK, RETRY, Host, hosts, no_process_title  # noqa: F401 (fixtures)

MAC = "02:00:00:00:09:09"


@dataclass(frozen=True)
class Sighting:
    mac: str
    kind: str
    at: float


class FakeCapture:
    """link.adapters.capture.ClaimCapture's API (docs: wire-interfaces), fed by the test."""

    def __init__(self, interface: str, address: str) -> None:
        self.address = address
        self.queued: list[Sighting] = []
        self.probes = 0
        self.closed = False

    def fileno(self) -> int:
        return -1

    def read(self) -> list[Sighting]:
        out, self.queued = self.queued, []
        return out

    def probe(self) -> None:
        self.probes += 1

    def close(self) -> None:
        self.closed = True


def make(hosts: Callable[..., Host], store: FakeEtcd, clock: Clock, name: str) -> tuple[Host, list[FakeCapture]]:
    host = hosts(store, clock, name)  # the agent's default policy: arbitrate
    captures: list[FakeCapture] = []

    def open_capture(interface: str, address: str) -> FakeCapture:
        captures.append(FakeCapture(interface, address))
        return captures[-1]

    host.worker.wire.open_capture = open_capture
    return host, captures


def cycle(host: Host, wire_only: bool = False) -> tuple[State, list[WireReport]]:
    """One cycle (`wire_only`: as the loop runs it on a view or when a silence ends, without
    asking etcd); the `wire` reports the worker sent the supervisor."""
    election = host.worker.election
    assert election is not None
    run_cycle = election.run_cycle
    if wire_only:
        def refused(**kwargs: object) -> None:
            raise AssertionError("a decision on the wire alone asks etcd nothing first")
        election.run_cycle = refused  # type: ignore[method-assign]
    try:
        host.worker.cycle(wire_only=wire_only)
    finally:
        election.run_cycle = run_cycle  # type: ignore[method-assign]
    reports = []
    while host.supervisor.poll():
        message = protocol.decode(host.supervisor.recv(), protocol.Family.REPORT)
        if isinstance(message, WireReport):
            reports.append(message)
    return host.worker.fsm.state, reports


def view(host: Host, holders: list[dict], candidates: list[dict], heard_at: float | None) -> None:
    host.supervisor.send(protocol.encode(WireView(tuple(HeardPeer(**h) for h in holders),
                                                  tuple(HeardPeer(**c) for c in candidates), heard_at, 1.0)))
    host.worker.link.read()


def two_hosts(hosts: Callable[..., Host]) -> tuple[FakeEtcd, Clock, Host, Host, list[FakeCapture]]:
    store, clock = FakeEtcd(), Clock()
    h1, _ = make(hosts, store, clock, "h1")
    h2, captures = make(hosts, store, clock, "h2")
    assert cycle(h1)[0] is State.ACTIVATED and cycle(h2)[0] is State.STANDBY
    return store, clock, h1, h2, captures


def fail(h1: Host, h2: Host, clock: Clock, cycles: int = RETRY) -> None:
    for _ in range(cycles):
        clock.now += h1.worker.config.tick
        cycle(h1)
        cycle(h2)


def test_the_default_policy_is_arbitrate_and_the_heartbeat_says_who_holds_the_lock(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1, _ = make(hosts, store, clock, "h1")
    assert h1.worker.fault_policy == "arbitrate"
    state, reports = cycle(h1)
    assert state is State.ACTIVATED
    assert reports[-1] == WireReport(bound=True, lock=True, eligible=True, priority=10)


def test_etcd_down_the_holder_keeps_the_standby_waits_then_etcd_decides_again(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = two_hosts(hosts)
    store.fail(REFUSED)
    view(h2, [{"host": "h1", "priority": 10, "lock": False}], [{"host": "h1", "priority": 10, "lock": False}], clock.now)
    fail(h1, h2, clock)
    for _ in range(20):  # much longer than 3 intervals: the holder is heard, the standby waits
        clock.now += h1.worker.config.tick
        assert cycle(h1)[0] is State.ACTIVATED and cycle(h2)[0] is State.STANDBY
        view(h2, [{"host": "h1", "priority": 10, "lock": False}], [], clock.now)
    assert h1.binder.bound and not h2.binder.bound
    assert h1.worker.wire.verdict.decision.value == "keep" and h2.worker.wire.verdict.decision.value == "wait"
    _, reports = cycle(h1)
    store.recover()
    state, reports = cycle(h1)
    assert state is State.ACTIVATED and reports[-1].lock and reports[-1].decision is None
    assert cycle(h2)[0] is State.STANDBY and store.keys[LOCK].value == "h1"


def test_the_holder_falls_silent_the_first_ranked_standby_takes_it(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, captures = two_hosts(hosts)
    store.fail(DEADLINE)
    fail(h1, h2, clock)
    last_heard = clock.now
    h1.close()  # the holder dies (its heartbeats stop: the supervisor's view has no holder)
    view(h2, [], [{"host": "h3", "priority": 10, "lock": False}], last_heard)
    assert h2.worker.wire.due(clock.now), "a new view during the outage is judged at once"
    clock.now = last_heard + 2.9
    assert cycle(h2, wire_only=True)[0] is State.STANDBY
    assert not h2.worker.wire.due(clock.now) and h2.worker.wire.next_due() == last_heard + 3.0
    assert captures and captures[0].probes >= 1 and captures[0].address == "198.51.100.50"
    clock.now = last_heard + 3.0
    assert h2.worker.wire.due(clock.now)
    state, reports = cycle(h2, wire_only=True)
    assert state is State.ACTIVATED and h2.binder.bound
    assert reports[-1].bound and not reports[-1].lock and reports[-1].decision == "take" and reports[-1].rank == 0


def test_an_arp_answer_from_another_mac_holds_the_standby_back(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, captures = two_hosts(hosts)
    store.fail(DEADLINE)
    fail(h1, h2, clock)
    h1.close()
    view(h2, [], [], None)  # nobody speaks the wire: a LinK v2 host holds it
    clock.now += 2.0
    captures[0].queued.append(Sighting(MAC, "arp-reply", clock.now))
    cycle(h2)
    clock.now += 2.9
    assert cycle(h2)[0] is State.STANDBY
    clock.now += 0.2
    assert cycle(h2)[0] is State.ACTIVATED


def test_two_holders_on_the_wire_the_worse_ranked_yields(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = two_hosts(hosts)
    store.fail(DEADLINE)
    fail(h1, h2, clock)
    view(h1, [{"host": "h0", "priority": 10, "lock": False}], [], clock.now)  # h0 < h1: same priority, the name decides
    state, reports = cycle(h1, wire_only=True)
    assert state is State.STANDBY and not h1.binder.bound
    assert reports[-1].decision == "yield_to_rank" and not reports[-1].bound


def test_a_holder_cut_from_etcd_yields_to_the_lock_holder_before_its_fault(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = two_hosts(hosts)
    h1.etcd.fail(REFUSED)  # h1 alone is cut off
    clock.now += h1.worker.config.tick
    assert cycle(h1)[0] is State.ACTIVATED  # one failed cycle: not a fault yet
    store.expire(h1.worker.election.lease_id)
    assert cycle(h2)[0] is State.ACTIVATED and store.keys[LOCK].value == "h2"
    view(h1, [{"host": "h2", "priority": 10, "lock": True}], [], clock.now)
    assert h1.worker.wire.due(clock.now)
    clock.now += 0.1
    assert cycle(h1, wire_only=True)[0] is State.STANDBY and not h1.binder.bound


def test_reannounce_puts_the_vip_in_place_again_only_on_the_holder(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = two_hosts(hosts)
    for host in (h1, h2):
        host.supervisor.send(protocol.encode(Reannounce("h3 stepped down from 198.51.100.50/32")))
        host.worker.link.read()
    assert h1.binder.calls == ["activate", "activate"] and h2.binder.calls == ["deactivate STANDBY"]


@pytest.mark.parametrize("policy", ["activate", "keep", "release"])
def test_other_policies_ignore_the_wire(hosts: Callable[..., Host], policy: str) -> None:
    store, clock = FakeEtcd(), Clock()
    h1 = hosts(store, clock, "h1", FAULT_POLICY=policy)
    h1.worker.cycle()
    store.fail(DEADLINE)
    view(h1, [{"host": "h0", "priority": 0, "lock": True}], [], clock.now)
    for _ in range(RETRY + 1):
        clock.now += h1.worker.config.tick
        h1.worker.cycle()
    assert h1.worker.fsm.state is (State.STANDBY if policy == "release" else State.ACTIVATED)
    assert h1.worker.wire.verdict is None


def test_the_worker_runs_a_cycle_when_the_silence_ends_not_at_the_next_tick(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = two_hosts(hosts)
    store.fail(DEADLINE)
    fail(h1, h2, clock)
    last_heard = clock.now
    view(h2, [], [], last_heard)
    clock.now = last_heard + 1.0
    assert cycle(h2)[0] is State.STANDBY
    assert h2.worker.wire.next_due() == last_heard + 3.0
    assert not h2.worker.wire.due(last_heard + 2.99) and h2.worker.wire.due(last_heard + 3.0)
    store.recover()
    assert cycle(h2)[0] is State.STANDBY  # etcd answers: the election decides, the wire has nothing due
    assert h2.worker.wire.next_due() is None and not h2.worker.wire.due(last_heard + 60)


def took_it_on_the_wire(hosts: Callable[..., Host], heard: bool = True) -> tuple[FakeEtcd, Clock, Host, Host, int]:
    """h1 holds the lock (h2 hears it hold the VIP on the wire, unless not `heard`) and dies
    during an outage; h2 takes the VIP on the wire's decision; etcd comes back with h1's lease
    still there (etcd renews leases when it restarts)."""
    store, clock, h1, h2, _ = two_hosts(hosts)
    dead_lease = h1.worker.election.lease_id
    if heard:
        view(h2, [{"host": "h1", "priority": 10, "lock": True}], [], clock.now)
    store.fail(DEADLINE)
    fail(h1, h2, clock)
    last_heard = clock.now
    h1.close()
    view(h2, [], [], last_heard)
    clock.now = last_heard + 3.0
    assert cycle(h2, wire_only=True)[0] is State.ACTIVATED
    store.recover()
    assert store.keys[LOCK].value == "h1"
    return store, clock, h1, h2, dead_lease


def test_etcd_back_a_lock_of_a_host_the_wire_does_not_hear_does_not_unbind_the_wire_holder(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, dead_lease = took_it_on_the_wire(hosts)
    for _ in range(3):  # until the dead host's lease expires, the VIP keeps its holder
        clock.now += h2.worker.config.tick
        assert cycle(h2)[0] is State.ACTIVATED and h2.binder.bound
    store.expire(dead_lease)
    clock.now += h2.worker.config.tick
    assert cycle(h2)[0] is State.ACTIVATED and store.keys[LOCK].value == "h2"
    assert h2.worker.wire.after_outage is None


def test_etcd_back_a_lock_holder_the_wire_never_heard_hold_the_vip_is_obeyed_at_once(hosts: Callable[..., Host]) -> None:
    # The chaos run's case: a holder cut from the LAN and etcd together kept the VIP; meanwhile
    # another host took the lock. Back on both, it never heard that host hold the VIP: that
    # is no holder that died during an outage, and etcd's word is taken at once.
    store, clock, h1, h2, _ = took_it_on_the_wire(hosts, heard=False)
    clock.now += h2.worker.config.tick
    assert cycle(h2)[0] is State.STANDBY and not h2.binder.bound
    assert h2.worker.wire.after_outage is None


def test_etcd_back_the_wire_holder_yields_at_once_when_the_lock_holder_is_heard_binding(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = took_it_on_the_wire(hosts)
    clock.now += h2.worker.config.tick
    assert cycle(h2)[0] is State.ACTIVATED
    view(h2, [{"host": "h1", "priority": 10, "lock": True}], [], clock.now)  # h1's lock, and h1 binds
    assert h2.worker.wire.due(clock.now), "judged at once, not at the next cycle"
    assert cycle(h2, wire_only=True)[0] is State.STANDBY and not h2.binder.bound


def test_etcd_back_the_keep_beside_an_unheard_lock_holder_lasts_two_leases_at_most(hosts: Callable[..., Host]) -> None:
    store, clock, h1, h2, _ = took_it_on_the_wire(hosts)
    lease = h2.worker.config.lease_ttl
    clock.now += h2.worker.config.tick
    assert cycle(h2)[0] is State.ACTIVATED
    clock.now += 2 * lease + 0.1  # a lock holder that is alive but never heard (no wire between them)
    assert cycle(h2)[0] is State.STANDBY
