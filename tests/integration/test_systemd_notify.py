"""systemd's notification protocol against the real agent (Type=notify): the test plays systemd,
binding the datagram socket NOTIFY_SOCKET names (a file in the lab's workdir: an abstract
socket would belong to the test's network namespace, not the host's) and reading READY,
STATUS, WATCHDOG, RELOADING and STOPPING as the agent sends them."""
from __future__ import annotations

import os
import signal
import socket
import time
from typing import Callable

import pytest

from tests.lab import wait_until

pytestmark = pytest.mark.lab

VIP = "198.51.100.60/32"
OTHER_VIP = "198.51.100.61/32"
WATCHDOG_USEC = 2_000_000  # a ping every second


class FakeSystemd:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.got: list[dict[str, str]] = []  # every notification, in order
        self.cursor = 0  # until() looks from here on

    def read(self, timeout: float) -> list[dict[str, str]]:
        """What arrives within `timeout` seconds (bounded in count too), also kept in `got`."""
        new: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                break
            new.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
        self.got += new
        return new

    def until(self, predicate: Callable[[dict[str, str]], bool], timeout: float, what: str) -> dict[str, str]:
        """The first notification after the previous match that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        for _ in range(10000):
            for index in range(self.cursor, len(self.got)):
                if predicate(self.got[index]):
                    self.cursor = index + 1
                    return self.got[index]
            self.cursor = len(self.got)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.read(min(left, 0.5))
        raise AssertionError(f"no notification {what} within {timeout} s; got {self.got}")

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


@pytest.mark.hosts(1)
@pytest.mark.lab_timeout(120)
def test_the_agent_tells_systemd_ready_status_watchdog_reload_and_stopping(lab):
    host = lab.host(1)
    # READY is about the VIPs configured at start: one added, then the agent restarted.
    host.start_agent().wait_ready(30)
    lab.add_vip(VIP)
    assert host.agent.stop() == 0

    systemd = FakeSystemd(str(lab.workdir / "notify-h1.sock"))
    try:
        agent = host.start_agent(NOTIFY_SOCKET=systemd.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
        ready = systemd.until(lambda m: "READY" in m, 45, "READY=1")
        # At READY the API answers and the VIP's worker has reported (its title is set then).
        assert agent.api("GET", "/ips", timeout=2.0).status == 200
        assert any(VIP in title for title in agent.worker_titles().values()), agent.titles()
        before = [m for m in systemd.got[:systemd.got.index(ready)] if "STATUS" in m]
        assert before and all(m["STATUS"].startswith("starting: waiting for") for m in before), systemd.got
        assert ready["STATUS"].startswith("1 VIP: "), ready

        # The line follows the VIPs: a second one added, then ACTIVATED as this (only) host wins both.
        wait_until(lambda: host.has(VIP), 20, what=f"h1 to bind {VIP}")
        lab.add_vip(OTHER_VIP)
        systemd.until(lambda m: m.get("STATUS") == "2 VIPs: 2 ACTIVATED; etcd ok", 20, "STATUS with both VIPs ACTIVATED")
        assert systemd.got.count(ready) == 1  # READY once at start
        lines = [m["STATUS"] for m in systemd.got if "STATUS" in m]
        assert all(a != b for a, b in zip(lines, lines[1:])), lines  # sent when it changes only

        assert sum("WATCHDOG" in m for m in systemd.read(5.0)) >= 2, systemd.got

        # A supervisor that does not turn sends no ping (systemd would restart it).
        os.kill(agent.pid, signal.SIGSTOP)
        try:
            systemd.read(0.5)  # what was sent before the stop
            assert [m for m in systemd.read(3.0) if "WATCHDOG" in m] == []
            systemd.cursor = len(systemd.got)  # until() below: only what comes after SIGCONT
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        systemd.until(lambda m: "WATCHDOG" in m, 10, "WATCHDOG=1 again after SIGCONT")

        # `systemctl reload` (ExecReload: SIGHUP): RELOADING=1, then READY=1.
        systemd.cursor = len(systemd.got)  # the READY=1 looked for below follows the SIGHUP
        os.kill(agent.pid, signal.SIGHUP)
        systemd.until(lambda m: m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m, 10, "RELOADING=1")
        systemd.until(lambda m: m.get("READY") == "1", 10, "READY=1 after the reload")

        assert agent.stop(timeout=15) == 0
        systemd.read(1.0)
        assert any(m.get("STOPPING") == "1" for m in systemd.got), systemd.got
    finally:
        systemd.close()
