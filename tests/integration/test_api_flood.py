"""A flood of idle and byte-by-byte connections from the LAN does not silence the API (issue
"Secure by default", point 9): the local `link-client` answers within its 1 s timeout, and an
authenticated caller from the flooding machine itself is answered.

On waitress's defaults this fails: it stops accepting anyone at 100 open connections and cuts
an idle one only after 120 s (checked every 30 s), a byte at a time resetting the clock, so
both calls below would wait in the listen backlog past their timeouts.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from link.api.http_server import REQUEST_DEADLINE
from tests.lab import netns
from tests.lab.lab import AGENT_PORT
from tests.lab.waiting import wait_until

pytestmark = pytest.mark.lab

IDLE = 500
TRICKLERS = 20
PASSWORD = "flood-proof password"


class Trickler(threading.Thread):
    """Slowloris: connections that send a request one byte every half second, reopened when the
    server cuts them (bounded: a few hundred connections, until stopped)."""

    def __init__(self, ns: str, address: str) -> None:
        super().__init__(name="trickler", daemon=True)
        self.ns, self.address = ns, address
        self.stop = threading.Event()
        self.opened = 0
        self.cut = 0
        self._socks: list[socket.socket | None] = [None] * TRICKLERS
        self._lock = threading.Lock()

    def _open(self) -> socket.socket | None:
        if self.opened >= 400:
            return None
        self.opened += 1
        try:
            return netns.connect_in(self.ns, self.address, AGENT_PORT, 2.0)
        except OSError:
            return None

    def run(self) -> None:
        request = b"GET /ips HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        sent = [0] * TRICKLERS
        for _ in range(240):  # at most 2 minutes
            if self.stop.wait(0.5):
                break
            for i in range(TRICKLERS):
                with self._lock:
                    sock = self._socks[i]
                    if sock is None:
                        sock = self._socks[i] = self._open()
                        sent[i] = 0
                    if sock is None:
                        continue
                    try:
                        sock.send(request[sent[i]:sent[i] + 1])
                        sent[i] += 1
                    except OSError:
                        self.cut += 1
                        sock.close()
                        self._socks[i] = None

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        with self._lock:
            for sock in self._socks:
                if sock is not None:
                    sock.close()


def link_client() -> list[str]:
    """The real CLI: the console script next to this interpreter, else its module."""
    script = Path(sys.executable).parent / "link-client"
    return [str(script)] if script.exists() else [sys.executable, "-m", "link.cli.link_client"]


@pytest.mark.hosts(1)
def test_a_flood_of_idle_and_slow_connections_does_not_silence_the_api(lab):
    host = lab.host(1)
    (agent,) = lab.start_agents(BIND_ADDRESS="0.0.0.0", USER="ops", PASSWORD=PASSWORD)
    trickler = Trickler(lab.client_ns, host.ip)
    with contextlib.ExitStack() as stack:
        stack.callback(trickler.close)
        idle = []
        for _ in range(IDLE):
            sock = stack.enter_context(netns.connect_in(lab.client_ns, host.ip, AGENT_PORT, 2.0))
            idle.append(sock)
        assert len(idle) == IDLE
        trickler.start()
        wait_until(lambda: trickler.opened >= TRICKLERS, 10.0, 0.05, "the slow senders to connect")
        # The real CLI on the host, with its own timeout at 1 s, default --host (localhost:1313).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LINK_USER": "ops", "LINK_PASSWORD": PASSWORD}
        listed = subprocess.run(["ip", "netns", "exec", host.ns, *link_client(), "--timeout", "1", "list"],
                                env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed
        # From the flooding machine itself, with credentials: answered (an idle connection of
        # its own makes room), at worst once the request deadline has cut the stalled ones.
        answer = agent.api("GET", "/ips", ns=lab.client_ns, address=host.ip, timeout=REQUEST_DEADLINE + 5)
        assert answer.status == 200 and answer.body == {"ips": []}, answer
        # The slow senders were really there, and are cut rather than kept forever.
        assert trickler.opened >= TRICKLERS
        wait_until(lambda: trickler.cut > 0, 2 * REQUEST_DEADLINE, 0.2, "the server to cut a slow sender")
    # The password never reached the log, and the agent is still fine.
    assert PASSWORD not in host.log_path.read_text()
    assert agent.api("GET", "/ips").status == 200
