"""systemd's notification protocol, driven for real: the test binds an AF_UNIX datagram socket,
points NOTIFY_SOCKET at it and reads what the supervisor's notifier sends (READY, STATUS,
WATCHDOG, RELOADING, STOPPING), through link.supervisor.sd_notify, systemd.py and the Arbiter."""
from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

from link.config import load
from link.supervisor import arbiter as arbiter_mod
from link.supervisor.arbiter import Arbiter
from link.supervisor.records import VipRecord
from link.supervisor.sd_notify import Notifier, socket_address, watchdog_seconds
from link.supervisor.status_line import EtcdWatch, status_line
from link.supervisor.store import VipStore
from link.supervisor.systemd import READY_BOUND, SystemdLink
from link.vocabulary.vip import VipSpec
from tests.unit.fake_clock import Clock
from tests.unit.test_arbiter import FakeOps


class Listener:
    """The systemd side: a datagram socket the notifications land on."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)

    def read(self) -> list[dict[str, str]]:
        """Every datagram waiting, each as its KEY=value pairs."""
        got = []
        for _ in range(1000):
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            got.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        return got


@pytest.fixture
def listener(tmp_path) -> Iterator[Listener]:
    one = Listener(str(tmp_path / "notify"))
    yield one
    one.sock.close()


def notifier_for(listener: Listener, **env: str) -> Notifier:
    environ = {"NOTIFY_SOCKET": listener.sock.getsockname(), **env}
    return Notifier.from_environ(environ, pid=os.getpid())


def test_a_notification_reaches_the_socket_and_the_variables_leave_the_environment(listener) -> None:
    environ = {"NOTIFY_SOCKET": listener.sock.getsockname(), "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242",
               "PATH": "/usr/bin"}
    notifier = Notifier.from_environ(environ, pid=4242)
    assert environ == {"PATH": "/usr/bin"}  # children forked later cannot speak for the service
    assert notifier.watchdog == 30.0
    assert notifier.send("READY=1", "STATUS=up")
    assert listener.read() == [{"READY": "1", "STATUS": "up"}]


def test_an_abstract_socket_name_is_reached_with_a_leading_nul() -> None:
    name = f"link-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).send("STATUS=abstract")
        assert sock.recv(100) == b"STATUS=abstract"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "30000000"})
    assert not notifier.enabled and notifier.watchdog is None
    assert not notifier.send("READY=1")


def test_a_socket_nobody_listens_on_is_a_failed_send_not_an_exception(tmp_path) -> None:
    assert not Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")}).send("READY=1")
    assert socket_address("relative/path") is None


@pytest.mark.parametrize("env, pid, expected", [
    ({"WATCHDOG_USEC": "20000000"}, 7, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "7"}, 7, 20.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "8"}, 7, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, 7, None),
    ({"WATCHDOG_USEC": "soon"}, 7, None),
    ({}, 7, None),
])
def test_the_watchdog_period_is_read_as_sd_watchdog_enabled_reads_it(env, pid, expected) -> None:
    assert watchdog_seconds(env, pid) == expected


def record(ip: str, status: str, vip_id: str | None = None) -> VipRecord:
    one = VipRecord(spec=VipSpec(id=vip_id or f"vip-{ip}", ip=ip), since=0.0)
    one.status = status
    return one


def test_ready_waits_for_the_api_and_every_worker_then_status_only_when_it_changes(listener) -> None:
    clock = Clock(100.0)
    link = SystemdLink(notifier_for(listener), "activate", clock)
    vips = {r.id: r for r in (record("198.51.100.10", "BOOTING"), record("198.51.100.11", "BOOTING"))}
    link.booting(vips)
    link.tick(vips)
    assert listener.read() == [{"STATUS": "starting: waiting for the API, the workers of 198.51.100.10, 198.51.100.11"}]
    link.api_listening()
    link.worker_booted("vip-198.51.100.10")
    clock.now += 1
    link.tick(vips)
    assert listener.read() == [{"STATUS": "starting: waiting for the worker of 198.51.100.11"}]
    vips["vip-198.51.100.11"].status = "ACTIVATED"
    link.worker_booted("vip-198.51.100.11")
    clock.now += 1
    link.tick(vips)
    assert listener.read() == [{"READY": "1", "STATUS": "2 VIPs: 1 ACTIVATED, 1 BOOTING; etcd ok"}]
    clock.now += 1
    link.tick(vips)
    assert listener.read() == []  # nothing changed: nothing sent
    vips["vip-198.51.100.10"].status = "STANDBY"
    clock.now += 1
    link.tick(vips)
    assert listener.read() == [{"STATUS": "2 VIPs: 1 ACTIVATED, 1 STANDBY; etcd ok"}]
    link.reloading()
    link.reloaded()
    reload = listener.read()
    assert reload[0]["RELOADING"] == "1" and int(reload[0]["MONOTONIC_USEC"]) > 0
    assert reload[1] == {"READY": "1", "STATUS": "2 VIPs: 1 ACTIVATED, 1 STANDBY; etcd ok"}
    link.stopping()
    assert listener.read() == [{"STOPPING": "1", "STATUS": "stopping: releasing the VIPs"}]


def test_a_worker_that_never_boots_delays_ready_only_until_the_bound(listener) -> None:
    clock = Clock(100.0)
    link = SystemdLink(notifier_for(listener), "activate", clock)
    vips = {r.id: r for r in (record("198.51.100.10", "BOOTING"),)}
    link.booting(vips)
    link.api_listening()
    link.tick(vips)
    clock.now += READY_BOUND - 1
    link.tick(vips)
    assert [m for m in listener.read() if "READY" in m] == []
    clock.now += 2
    link.tick(vips)
    assert listener.read() == [{"READY": "1", "STATUS": "1 VIP: 1 BOOTING; etcd ok; started without the worker of 198.51.100.10"}]


def test_a_fatal_worker_does_not_hold_ready_back(listener) -> None:
    clock = Clock(100.0)
    link = SystemdLink(notifier_for(listener), "activate", clock)
    fatal = record("198.51.100.10", "BOOTING")
    fatal.worker_state = "FATAL"  # as the lifecycle leaves it after MAX_BOOT_FAILURES
    link.booting({fatal.id: fatal})
    link.api_listening()
    link.tick({fatal.id: fatal})
    assert listener.read() == [{"READY": "1", "STATUS": "1 VIP: 1 BOOTING; 1 worker FATAL; etcd ok"}]


def test_the_watchdog_is_pinged_at_half_its_period_and_only_from_ticks(listener) -> None:
    clock = Clock(100.0)
    link = SystemdLink(notifier_for(listener, WATCHDOG_USEC="10000000"), "activate", clock)
    pings = []
    for _ in range(12):  # 12 s of one tick a second: pings at 0, 5 and 10 s
        link.tick({})
        pings.append(sum("WATCHDOG" in m for m in listener.read()))
        clock.now += 1
    assert pings == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    clock.now += 60  # a loop that did not turn for a minute sent nothing meanwhile
    assert listener.read() == []


def metrics(ok: int, unavailable: int) -> dict:
    return {"etcd": {"requests": {"Range": ok + unavailable}, "errors": {"Range": {"unavailable": unavailable}}}}


def test_etcd_is_unreachable_when_every_worker_calls_fail_and_the_line_says_for_how_long() -> None:
    vips = [record("198.51.100.10", "ACTIVATED"), record("198.51.100.11", "STANDBY")]
    for one in vips:
        one.pid, one.metrics = 10, metrics(5, 0)
    watch = EtcdWatch()
    watch.note(vips, 100.0)
    for one in vips:
        one.metrics = metrics(5, 2)
    watch.note(vips, 105.0)
    assert status_line(vips, watch.verdict(147.0), "activate") == \
        "2 VIPs: 1 ACTIVATED, 1 STANDBY; etcd unreachable for 40 s: policy activate"
    vips[1].metrics = metrics(6, 2)  # one worker reached etcd again
    watch.note(vips, 150.0)
    assert watch.verdict(150.0) == "etcd unreachable for 1 of 2 VIPs"
    vips[0].metrics = metrics(7, 2)
    watch.note(vips, 155.0)
    assert watch.verdict(155.0) == "etcd ok"


def test_the_arbiter_says_ready_once_the_api_listens_and_the_stored_vip_s_worker_reported(tmp_path, monkeypatch,
                                                                                             listener) -> None:
    monkeypatch.setattr(arbiter_mod, "setproctitle", lambda title: None)
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)})
    store = VipStore(str(tmp_path))
    store.save([VipSpec(id=f"vip-{uuid.uuid4()}", ip="198.51.100.10/32")])
    ops, clock = FakeOps(), Clock(100.0)
    arb = Arbiter(config, store, ops, clock=clock, notifier=notifier_for(listener, WATCHDOG_USEC="2000000"))
    arb.boot()
    worker_pid = ops.spawned[0][0]

    def turns() -> list[dict[str, str]]:
        for _ in range(3):  # 1.5 s of the fake clock: less than the hung-worker limit
            clock.now += 0.5
            arb.turn(max_wait=0.01)
        return listener.read()

    assert not [m for m in turns() if "READY" in m]
    ops.api_child.send({"op": "listening", "id": 1})
    first = turns()
    assert ops.api_child.recv() == {"ok": True, "id": 1, "result": None}
    assert not [m for m in first if "READY" in m]  # the worker has not reported yet
    assert any("WATCHDOG" in m for m in first)
    ops.children[worker_pid].send({"type": "state", "state": "STANDBY", "since": 1.0, "holder": "h2"})
    ready = [m for m in turns() if "READY" in m]
    assert ready == [{"READY": "1", "STATUS": "1 VIP: 1 STANDBY; etcd ok"}]
    arb.begin_stop("test")
    assert {"STOPPING": "1", "STATUS": "stopping: releasing the VIPs"} in listener.read()

