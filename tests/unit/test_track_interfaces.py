"""Track interfaces (issue 17, part 4): a tracked interface without carrier makes the VIP FAILING
and its holder unbinds at once; carrier back: STANDBY, unless a check still fails.

The kernel is faked at the netlink socket (FakeKernel: it answers RTM_GETLINK and sends
RTM_NEWLINK / RTM_DELLINK built here with struct, as the kernel lays them out); the Worker runs
on the fake etcd and a binder that records what it is told."""
from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from multiprocessing import Pipe
from typing import Callable, Iterator

import pytest

from link.adapters import carrier as adapter
from link.adapters.carrier import LinkNews, LinkWatch
from link.checks import CheckResult
from link.config import ConfigError, load, parse_track_interfaces
from link.vocabulary import protocol
from link.vocabulary.message_base import Family
from link.vocabulary.protocol import Settings, StateReport
from link.vocabulary.vip import VipSpec, lock_key
from link.vocabulary.vip_states import Event, State
from link.worker import main as worker_main
from link.worker.carrier import CarrierTracker
from link.worker.fsm import TRANSITIONS, mermaid
from link.worker.main import Worker
from tests.unit.fake_clock import Clock
from tests.unit.fake_etcd import FakeEtcd
from tests.unit.test_worker_seams import Host as SeamsHost
from tests.unit.test_worker_seams import RecordingBinder, no_process_title  # noqa: F401 (an autouse fixture)

VIP = "198.51.100.50/32"
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
UP, NO_CARRIER, SET_DOWN = IFF_UP | IFF_LOWER_UP, IFF_UP, 0x0


def link_message(kind: int, name: str, index: int, flags: int, seq: int = 0) -> bytes:
    """An RTM_NEWLINK / RTM_DELLINK as the kernel sends it: nlmsghdr, ifinfomsg, IFLA_MTU, IFLA_IFNAME."""
    mtu = struct.pack("=HHI", 8, 4, 1500)
    raw = name.encode() + b"\0"
    ifname = struct.pack("=HH", 4 + len(raw), 3) + raw + b"\0" * (-(4 + len(raw)) % 4)
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0xFFFFFFFF) + mtu + ifname
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def error_message(code: int, seq: int) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 32, 18, 1, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), 2, 0, seq, 0) + body


class FakeKernel:
    """The netlink socket of a LinkWatch: answers RTM_GETLINK from `links`, queues notifications.
    Its fileno is a pipe's read end holding one byte per queued datagram, as readiness goes."""

    def __init__(self, links: dict[str, tuple[int, int]]) -> None:
        self.links = dict(links)  # name -> (index, flags)
        self.queue: list[bytes | OSError] = []
        self.sent: list[bytes] = []
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.closed = False

    def fileno(self) -> int:
        return self._r

    def _push(self, item: bytes | OSError) -> None:
        self.queue.append(item)
        os.write(self._w, b"x")

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        length, kind, _, seq, _ = struct.unpack_from("=IHHII", data)
        assert kind == 18 and length == len(data)  # RTM_GETLINK
        name = data[36:length].split(b"\0", 1)[0].decode()
        if name in self.links:
            self._push(link_message(16, name, *self.links[name], seq=seq))
        else:
            self._push(error_message(errno.ENODEV, seq))
        return len(data)

    def recv(self, size: int) -> bytes:
        if not self.queue:
            raise BlockingIOError
        os.read(self._r, 1)
        item = self.queue.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def notify(self, name: str, flags: int | None, index: int | None = None) -> None:
        """The link changed: flags None deletes it."""
        if flags is None:
            index = self.links.pop(name)[0]
            self._push(link_message(17, name, index, 0))
            return
        index = index if index is not None else self.links.get(name, (len(self.links) + 2, 0))[0]
        self.links[name] = (index, flags)
        self._push(link_message(16, name, index, flags))

    def overflow(self) -> None:
        self._push(OSError(errno.ENOBUFS, "No buffer space available"))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)


# ------------------------------------------------------------------ the adapter
def test_link_messages_say_admin_state_and_carrier() -> None:
    data = link_message(16, "eth1", 2, UP) + link_message(16, "eth2", 3, NO_CARRIER) + link_message(17, "eth3", 4, 0)
    news = adapter.parse(data, {})
    assert news == [LinkNews("eth1", 2, True, True, True), LinkNews("eth2", 3, True, True, False), LinkNews("eth3", 4, False)]
    assert [(n.carrier, n.why_not()) for n in news] == [(True, ""), (False, "no carrier"), (False, "no such interface")]
    assert LinkNews("eth1", 2, True, False, True).why_not() == "set down"  # admin down, whatever the peer says


def test_answers_are_matched_to_the_names_asked_and_a_missing_interface_is_news() -> None:
    asked = {7: "eth1", 8: "bond0"}
    # A notification that happens to carry our number but another name is not our answer.
    assert adapter.parse(link_message(16, "eth9", 9, UP, seq=7), asked)[0].name == "eth9" and 7 in asked
    assert adapter.parse(link_message(16, "eth1", 2, UP, seq=7), asked) == [LinkNews("eth1", 2, True, True, True)]
    assert adapter.parse(error_message(errno.ENODEV, 8), asked) == [LinkNews("bond0", 0, False)]
    assert asked == {}
    assert adapter.parse(b"\x01\x00", {}) == [] and adapter.parse(struct.pack("=IHHII", 4, 16, 0, 0, 0), {}) == []


def test_the_watch_asks_by_name_and_asks_again_after_lost_notifications() -> None:
    kernel = FakeKernel({"eth1": (2, UP)})
    watch = LinkWatch(["eth1", "bond0"], sock=kernel)
    watch.ask()
    assert watch.waiting and [m[36:].split(b"\0")[0] for m in kernel.sent] == [b"eth1", b"bond0"]
    assert watch.read() == [LinkNews("eth1", 2, True, True, True), LinkNews("bond0", 0, False)]
    assert not watch.waiting and watch.read() == []
    kernel.overflow()
    kernel.links["bond0"] = (5, NO_CARRIER)
    assert watch.read() == [] and watch.overflows == 1 and len(kernel.sent) == 4  # asked again
    assert [n.name for n in watch.read()] == ["eth1", "bond0"]
    watch.close()
    assert kernel.closed


# ------------------------------------------------------------------ the tracker
def tracker(links: dict[str, tuple[int, int]], names: tuple[str, ...] = ("eth1",)) -> tuple[CarrierTracker, FakeKernel]:
    kernel = FakeKernel(links)
    found = CarrierTracker(LinkWatch(names, sock=kernel), label=VIP)
    found.start(wait=1.0)
    return found, kernel


def test_the_state_at_start_is_the_kernels_answer() -> None:
    up, _ = tracker({"eth1": (2, UP)})
    assert up.judge() == (None, "") and up.why() == ""
    down, _ = tracker({"eth1": (2, NO_CARRIER)}, ("eth1", "bond0"))
    assert down.judge() == (Event.CARRIER_LOST, "carrier lost on eth1 (no carrier); bond0 (no such interface)")
    assert down.judge() == (None, "")


def test_the_verdict_changes_on_the_first_loss_and_the_last_return() -> None:
    track, kernel = tracker({"eth1": (2, UP), "eth2": (3, UP)}, ("eth1", "eth2"))
    kernel.notify("eth9", NO_CARRIER)  # not tracked
    assert track.look() == (None, "")
    kernel.notify("eth1", SET_DOWN)
    assert track.look() == (Event.CARRIER_LOST, "carrier lost on eth1 (set down)")
    kernel.notify("eth2", NO_CARRIER)
    assert track.look() == (None, "") and track.why() == "carrier lost on eth1 (set down); eth2 (no carrier)"
    kernel.notify("eth1", UP)
    assert track.look() == (None, "")
    kernel.notify("eth2", UP)
    assert track.look() == (Event.CARRIER_BACK, "carrier back on eth1")
    kernel.notify("eth2", None)  # deleted
    assert track.look() == (Event.CARRIER_LOST, "carrier lost on eth2 (no such interface)")
    kernel.notify("eth2", UP, index=7)  # created again: followed by its name
    assert track.look() == (Event.CARRIER_BACK, "carrier back on eth2")


def test_a_renamed_interface_is_gone() -> None:
    track, kernel = tracker({"eth1": (2, UP)})
    kernel.links.pop("eth1")
    kernel.notify("lan0", UP, index=2)
    assert track.look() == (Event.CARRIER_LOST, "carrier lost on eth1 (renamed lan0)")


# ------------------------------------------------------------------ the table
def test_the_table_carrier_lost_fails_from_every_state_carrier_back_leaves_failing_only() -> None:
    for state in State:
        assert TRANSITIONS[(state, Event.CARRIER_LOST)] is State.FAILING
        assert TRANSITIONS[(state, Event.CARRIER_BACK)] is (State.STANDBY if state is State.FAILING else state)
    assert "ACTIVATED --> FAILING: carrier_lost" in mermaid() and "FAILING --> STANDBY: carrier_back" in mermaid()


# ------------------------------------------------------------------ the worker
class Host(SeamsHost):
    """One host's worker for the VIP (test_worker_seams' Host), tracking eth1 through a FakeKernel."""

    def __init__(self, store: FakeEtcd, clock: Callable[[], float], name: str, links: dict[str, tuple[int, int]],
                 **env: str) -> None:
        # SeamsHost's, with the link watch on a FakeKernel (its own __init__ makes a Worker without one)
        config = load({"INTERFACE": "eth1", "HOSTNAME": name, **env}, check_interface=False)
        self.kernel = FakeKernel(links)
        self.supervisor, theirs = Pipe()
        self.worker = Worker(config, VipSpec(id=f"vip-{name}", ip=VIP), theirs, etcd=store.client(), clock=clock,
                             binder=RecordingBinder, links=lambda names: LinkWatch(names, sock=self.kernel))
        self.worker.boot()
        self.worker.start_election()
        binder = self.worker.binder
        assert isinstance(binder, RecordingBinder)
        self.binder = binder
        self.reports: list[StateReport] = []

    def read_reports(self) -> list[StateReport]:
        while self.supervisor.poll():
            message = protocol.decode(self.supervisor.recv(), Family.REPORT)
            if isinstance(message, StateReport):
                self.reports.append(message)
        return self.reports

    def cycle(self) -> State:
        self.worker.cycle()
        self.read_reports()
        return self.worker.fsm.state

    def link(self, flags: int) -> State:
        """The kernel says eth1 changed; the worker's loop reads it (as when its socket wakes it)."""
        self.kernel.notify("eth1", flags)
        self.worker._judge_carrier()
        self.read_reports()
        return self.worker.fsm.state


@pytest.fixture
def made() -> Iterator[list[Host]]:
    """The hosts a test makes, closed at its end (each closes its link watch)."""
    found: list[Host] = []
    yield found
    for host in found:
        host.close()
        assert host.kernel.closed, "the worker closes its link watch"


@pytest.fixture
def hosts(made: list[Host]) -> Callable[..., Host]:
    return lambda *args, **env: made.append(Host(*args, **env)) or made[-1]


def test_the_holder_loses_carrier_unbinds_frees_the_lock_and_says_why(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1, h2 = hosts(store, clock, "h1", {"eth1": (2, UP)}), hosts(store, clock, "h2", {"eth1": (2, UP)})
    assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
    assert h1.link(NO_CARRIER) is State.FAILING
    assert h1.binder.calls == ["activate", "deactivate FAILING"] and not h1.binder.bound
    assert lock_key(VIP) not in store.keys, "FAILING frees the lock at once"
    last = h1.reports[-1]
    assert (last.state, last.previous, last.event, last.reason) == ("FAILING", "ACTIVATED", "carrier_lost",
                                                                       "carrier lost on eth1 (no carrier)")
    assert last.holder is None and last.metrics["transitions"].get("carrier_lost") == 1
    assert h2.cycle() is State.ACTIVATED and store.keys[lock_key(VIP)].value == "h2"
    for _ in range(3):  # no carrier: never a candidate, whatever the cycles see
        clock.now += h1.worker.config.tick
        assert h1.cycle() is State.FAILING and not h1.binder.bound
    # Carrier back: STANDBY (another host holds the lock), never a second holder.
    h1.worker._lock_changed = False  # nothing pending: whatever asks for a cycle now is the carrier's return
    assert h1.link(UP) is State.STANDBY and not h1.binder.bound
    assert (h1.reports[-1].event, h1.reports[-1].reason) == ("carrier_back", "carrier back on eth1")
    assert h1.worker._lock_changed, "eligible again: a cycle runs now, not at the next tick"
    assert h1.cycle() is State.STANDBY and h2.cycle() is State.ACTIVATED


def test_a_host_that_boots_without_carrier_starts_failing_and_never_takes_the_lock(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1 = hosts(store, clock, "h1", {"eth1": (2, SET_DOWN)})
    assert h1.worker.carrier is not None and h1.worker.fsm.state is State.BOOTING
    h1.worker._judge_carrier()  # what run() does before its loop
    assert h1.worker.fsm.state is State.FAILING and h1.cycle() is State.FAILING
    assert lock_key(VIP) not in store.keys and not h1.binder.bound
    assert h1.link(UP) is State.STANDBY and h1.cycle() is State.ACTIVATED


def test_a_failing_check_and_a_lost_carrier_each_keep_the_vip_failing(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1 = hosts(store, clock, "h1", {"eth1": (2, UP)}, FAIL_COUNT_BEFORE_FAILOVER="1")
    assert h1.cycle() is State.ACTIVATED
    bad, good = CheckResult(False, "TCP 198.51.100.20:5432 refused", 0.01), CheckResult(True, "ok", 0.01)

    def round_of(result: CheckResult) -> State:
        h1.worker.health._results.append([result])
        h1.worker._judge_health()
        return h1.worker.fsm.state

    assert round_of(bad) is State.FAILING
    assert h1.link(NO_CARRIER) is State.FAILING
    assert round_of(good) is State.FAILING, "checks pass again, but the carrier is still lost"
    assert h1.link(UP) is State.STANDBY
    assert round_of(bad) is State.FAILING
    assert h1.link(NO_CARRIER) is State.FAILING
    assert h1.link(UP) is State.FAILING, "carrier back, but the check still fails"
    assert round_of(good) is State.STANDBY
    # Removing the checks (PATCH) while the carrier is lost does not make the VIP eligible.
    assert round_of(bad) is State.FAILING and h1.link(NO_CARRIER) is State.FAILING
    h1.worker.commands.settings(Settings({"checks": []}))
    assert h1.worker.fsm.state is State.FAILING and not h1.worker.judge.failing
    assert h1.link(UP) is State.STANDBY


def test_an_update_that_leaves_the_checks_alone_does_not_restart_them(hosts: Callable[..., Host]) -> None:
    store, clock = FakeEtcd(), Clock()
    h1 = hosts(store, clock, "h1", {"eth1": (2, UP)})
    assert h1.cycle() is State.ACTIVATED
    replaced: list[object] = []
    h1.worker.health.replace = lambda *args: replaced.append(args)  # type: ignore[method-assign]
    h1.worker.commands.settings(Settings({"notify": ["/etc/link/scripts/notify"]}))
    assert replaced == [] and h1.worker.spec.notify == ("/etc/link/scripts/notify",)
    h1.worker.commands.settings(Settings({"checks": [{"type": "TCP", "host": "198.51.100.20", "port": 5432}]}))
    assert len(replaced) == 1 and h1.worker.fsm.state is State.ACTIVATED


def test_the_loop_unbinds_when_the_kernel_speaks_not_at_the_next_cycle(hosts: Callable[..., Host]) -> None:
    """The run loop, on the real clock, with a 30 s lease (a cycle every 10 s): the carrier loss
    wakes it, and the VIP is unbound with no election cycle in between."""
    store = FakeEtcd()
    h1 = hosts(store, time.monotonic, "h1", {"eth1": (2, UP)}, KEEPALIVE_INTERVAL="30")
    cycles: list[float] = []
    original = h1.worker.cycle

    def counted(wire_only: bool = False) -> None:
        cycles.append(time.monotonic())
        original(wire_only)

    h1.worker.cycle = counted  # type: ignore[method-assign]
    seen_at_unbind: list[int] = []
    deactivate = h1.binder.deactivate

    def unbind(state: str, reason: str) -> None:
        seen_at_unbind.append(len(cycles))
        deactivate(state, reason)

    h1.binder.deactivate = unbind  # type: ignore[method-assign]
    loop = threading.Thread(target=h1.worker.run, name="worker-loop", daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while h1.worker.fsm.state is not State.ACTIVATED and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the lock watch's own wake-up (our put) is over: the loop waits for its next tick
        assert h1.worker.fsm.state is State.ACTIVATED and h1.binder.bound
        before = len(cycles)
        lost_at = time.monotonic()
        h1.kernel.notify("eth1", NO_CARRIER)
        while not seen_at_unbind and time.monotonic() < deadline:
            time.sleep(0.001)
        print(f"carrier lost -> unbound in {1000 * (time.monotonic() - lost_at):.1f} ms")
        assert seen_at_unbind == [before], "unbound by the link event itself, before any election cycle"
        assert not h1.binder.bound and h1.worker.fsm.state is State.FAILING
    finally:
        h1.worker.request_stop("test over")
        loop.join(5)
    assert not loop.is_alive()


# ------------------------------------------------------------------ the setting
def test_track_interfaces_setting() -> None:
    assert load({"INTERFACE": "eth1"}, check_interface=False).track_interfaces == ("eth1",)
    assert parse_track_interfaces(" bond0, eth2 ,,eth1,bond0", "eth1", check_interface=False) == ("eth1", "bond0", "eth2")
    assert parse_track_interfaces("NONE", "eth1", check_interface=False) == ()
    for raw, said in [("none,eth2", "none goes alone"), ("eth/2", "not an interface name"), ("a" * 16, "not an interface name"),
                      ("eth 2", "not an interface name"), ("..", "not an interface name"), ("eth0:1", "not an interface name")]:
        with pytest.raises(ConfigError, match=said) as caught:
            parse_track_interfaces(raw, "eth1", check_interface=False)
        assert str(caught.value).startswith("TRACK_INTERFACES") and "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="no such network interface 'link-test-nope0'"):
        load({"INTERFACE": "lo", "TRACK_INTERFACES": "link-test-nope0"})
    assert load({"INTERFACE": "lo", "TRACK_INTERFACES": "lo"}).track_interfaces == ("lo",)
