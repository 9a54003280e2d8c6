"""The API under hostile clients (issue "Secure by default", points 5, 9, 15): failed logins
throttled in the log and answered 429 past 20 a minute; waitress's own errors as JSON; request
deadlines; loopback always served. A real LinkServer on 127.0.0.1, in this process."""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from typing import Any, Iterator

import pytest
from waitress import wasyncore

from link.api import http_server
from link.api.app import make_app
from link.api.guard import FailureGuard, peer_key
from link.api.http_server import LOCAL_POOL, REMOTE_POOL, Pools
from tests.unit.api_fakes import FakeSupervisor
from tests.unit.fake_clock import Clock

USER, PASSWORD = "ops", "s3cret-horse"
RIGHT = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
WRONG = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}-not".encode()).decode()


def serve_until(server: Any, stop: threading.Event) -> None:
    """The server's loop, a turn at a time until `stop` is set; then close it all."""
    socket_map = server._map
    while not stop.is_set() and socket_map:
        wasyncore.loop(timeout=0.2, map=socket_map, use_poll=True, count=1)
    server.task_dispatcher.shutdown()
    wasyncore.close_all(socket_map)


@contextlib.contextmanager
def serving(guard: FailureGuard | None = None, **kw: Any) -> Iterator[int]:
    """A LinkServer for the API app on an ephemeral 127.0.0.1 port, run in a thread; its port."""
    app = make_app(FakeSupervisor(), user=USER, password=PASSWORD, version="9.9.9", guard=guard)
    server = http_server.create_server(app, listen="127.0.0.1:0", threads=2, asyncore_use_poll=True,
                                       max_request_body_size=1024 * 1024, clear_untrusted_proxy_headers=True, **kw)
    stop = threading.Event()
    thread = threading.Thread(target=serve_until, args=(server, stop), daemon=True)
    thread.start()
    try:
        yield server.effective_port
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def get(port: int, path: str = "/ips", authorization: str | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Authorization": authorization} if authorization else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        conn.close()


def raw(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    """Send bytes as they are, read the whole answer (the server closes after an error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking all of it
        received = b""
        for _ in range(1000):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


# --- point 5: failed logins ---------------------------------------------------------------------

def test_failed_logins_log_one_line_per_peer_per_minute_without_the_credentials(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    caplog.set_level(logging.DEBUG)
    with serving(FailureGuard(clock=clock)) as port:
        for _ in range(5):
            assert get(port, authorization=WRONG)[0] == 401
        lines = [r.getMessage() for r in caplog.records if "refused credentials" in r.getMessage()]
        assert lines == ["refused credentials from 127.0.0.1"]
        clock.now += 61
        assert get(port, authorization=WRONG)[0] == 401
        lines = [r.getMessage() for r in caplog.records if "refused credentials" in r.getMessage()]
        assert lines == ["refused credentials from 127.0.0.1", "refused credentials from 127.0.0.1 (4 more since the last line)"]
        assert get(port, authorization=RIGHT)[0] == 200
    secret_forms = (PASSWORD, RIGHT.split()[1], WRONG.split()[1], f"{PASSWORD}-not")
    for record in caplog.records:
        text = record.getMessage() + str(record.args)
        assert not any(secret in text for secret in secret_forms), text


def test_twenty_failures_a_minute_get_429_even_with_the_right_password_for_a_minute() -> None:
    clock = Clock()
    with serving(FailureGuard(clock=clock)) as port:
        for _ in range(19):
            assert get(port, authorization=WRONG)[0] == 401
        clock.now += 30
        assert get(port, authorization=RIGHT)[0] == 200  # 19 failures: still let in
        status, headers, body = get(port, authorization=WRONG)  # the 20th within the minute
        assert status == 401
        for authorization in (RIGHT, WRONG, None):
            status, headers, body = get(port, authorization=authorization)
            assert status == 429, (authorization, status, body)
            assert headers["content-type"].startswith("application/json")
            assert headers["retry-after"] == "60"
            assert "too many failed logins" in body["error"] and PASSWORD not in json.dumps(body)
        clock.now += 45
        assert get(port, authorization=RIGHT)[0] == 429
        assert get(port, authorization=RIGHT)[1]["retry-after"] == "15"
        clock.now += 16
        assert get(port, authorization=RIGHT)[0] == 200
        # The count started again: one more failure is a 401, not a 429.
        assert get(port, authorization=WRONG)[0] == 401
        assert get(port, authorization=RIGHT)[0] == 200


def test_failures_spread_over_more_than_a_minute_do_not_block() -> None:
    clock = Clock()
    guard = FailureGuard(clock=clock)
    for _ in range(40):
        guard.failed("198.51.100.7")
        clock.now += 4  # 15 a minute
    assert guard.retry_after("198.51.100.7") is None


def test_the_peer_table_is_bounded_and_forgets() -> None:
    clock = Clock()
    guard = FailureGuard(clock=clock, max_peers=50)
    for i in range(500):
        guard.failed(f"203.0.113.{i % 250}" if i < 250 else f"2001:db8:{i:x}::1")
    assert len(guard) == 50
    clock.now += 121  # past the window and the log interval: nothing left to remember
    guard.failed("198.51.100.1")
    assert len(guard) == 1


def test_a_blocked_peer_is_forgotten_only_after_its_block(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    guard = FailureGuard(clock=clock)
    for _ in range(20):
        guard.failed("198.51.100.9")
    assert guard.retry_after("198.51.100.9") == 60
    clock.now += 59
    guard.failed("203.0.113.1")  # expiry runs; the blocked peer stays
    assert guard.retry_after("198.51.100.9") == 1
    # Its first failure had a line at once: the block is told a minute after that line.
    assert not [r for r in caplog.records if "429" in r.getMessage()]
    clock.now += 2
    assert guard.retry_after("198.51.100.9") is None
    blocks = [r for r in caplog.records if "429" in r.getMessage()]
    assert len(blocks) == 1 and blocks[0].levelno == logging.WARNING
    assert blocks[0].getMessage() == ("198.51.100.9 failed to authenticate 20 times within 60 s, 61 s ago: it got 429 "
                                      "for 60 s (19 more since the last line)")


class TimedLines(logging.Handler):
    """The guard's lines with the injected clock's time when each was logged."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(logging.DEBUG)
        self.clock = clock
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.clock.now, record.getMessage()))


@contextlib.contextmanager
def timed_lines(clock: Clock) -> Iterator[list[tuple[float, str]]]:
    handler = TimedLines(clock)
    logger = logging.getLogger("link.api.guard")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def about(lines: list[tuple[float, str]], address: str) -> list[tuple[float, str]]:
    return [(at, text) for at, text in lines if text.startswith(address + " ") or f"from {address} " in text
            or text.endswith(f"from {address}")]


def test_a_peer_blocked_within_a_minute_of_its_last_line_is_told_a_minute_after_that_line() -> None:
    clock = Clock()
    guard = FailureGuard(clock=clock)
    with timed_lines(clock) as lines:
        guard.failed("198.51.100.9")  # t=0: "refused credentials"
        clock.now += 10
        for _ in range(19):
            guard.failed("198.51.100.9")  # t=10: the 20th within the minute: blocked until t=70
        assert guard.retry_after("198.51.100.9") == 60
        for _ in range(49):  # it keeps asking once a second (429), t=10..58
            clock.now += 1
            assert guard.retry_after("198.51.100.9") is not None
        assert [text for _, text in lines] == ["refused credentials from 198.51.100.9"]
        clock.now = 1000.0 + 60  # a minute after its line, still blocked
        assert guard.retry_after("198.51.100.9") == 10
        assert len(lines) == 2
        assert lines[1] == (1060.0, "198.51.100.9 failed to authenticate 20 times within 60 s, 50 s ago: it got 429 "
                                    "for 60 s (19 more since the last line)")


def test_no_peer_ever_gets_two_lines_within_a_minute() -> None:
    """A scripted mix of bursts, blocks, pauses past the window and the log interval, and other
    peers' failures that make the guard forget; each peer's lines are a minute apart at least."""
    clock = Clock()
    guard = FailureGuard(clock=clock)
    peers = ["198.51.100.9", "198.51.100.10", "2001:db8:1::9"]
    with timed_lines(clock) as lines:
        for step in range(3000):
            peer = peers[step % 7 % 3]
            # As the app does: a blocked peer gets 429 before its credentials are looked at.
            if guard.retry_after(peer) is None and step % 13:
                guard.failed(peer)
            # Mostly bursts, now and then a pause long enough to be forgotten (121 s).
            clock.now += (0.3, 0.3, 2.0, 0.3, 45.0, 0.3, 121.0, 0.3, 0.3, 61.0)[step * 7 % 10] if step % 11 == 0 else 0.5
        blocks = [text for _, text in lines if "429" in text]
        assert blocks and any("refused credentials" in text for _, text in lines)
        for peer in peers:
            times = [at for at, _ in about(lines, peer)]
            assert len(times) > 3, peer
            assert all(later - earlier >= 60 for earlier, later in zip(times, times[1:])), (peer, times)


def test_a_peer_forgotten_with_failures_untold_gets_no_new_line_within_the_minute() -> None:
    clock = Clock()
    guard = FailureGuard(clock=clock)
    with timed_lines(clock) as lines:
        guard.failed("198.51.100.9")
        guard.failed("198.51.100.9")  # held back
        clock.now += 121
        guard.failed("203.0.113.1")  # expiry: "1 more times after the last line about it"
        guard.failed("198.51.100.9")  # at once: back, but told about a moment ago
        told = about(lines, "198.51.100.9")
        assert [at for at, _ in told] == [1000.0, 1121.0] and "1 more times" in told[1][1]
        clock.now += 60
        guard.failed("198.51.100.9")
        assert about(lines, "198.51.100.9")[-1] == (1181.0, "refused credentials from 198.51.100.9 (1 more since the last line)")


def test_ipv6_peers_count_per_64() -> None:
    assert peer_key("2001:db8:1:2:aaaa::1") == peer_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert peer_key("2001:db8:1:3::1") != peer_key("2001:db8:1:2::1")
    assert peer_key("::ffff:198.51.100.4") == "198.51.100.4"
    assert peer_key("::1") == "::1"
    guard = FailureGuard(clock=Clock())
    for i in range(20):
        guard.failed(f"2001:db8:1:2::{i + 1:x}")
    assert guard.retry_after("2001:db8:1:2::ffff") == 60
    assert guard.retry_after("2001:db8:1:3::1") is None


# --- point 15: waitress's own errors are JSON ----------------------------------------------------

def assert_json_error(answer: tuple[int, dict[str, str], Any], status: int, words: str) -> None:
    got, headers, body = answer
    assert got == status, answer
    assert headers["content-type"].startswith("application/json"), headers
    assert set(body) == {"error"} and words in body["error"], body


def test_waitress_refusals_are_json_with_their_status() -> None:
    with serving() as port:
        big = b"x" * (2 * 1024 * 1024)
        assert_json_error(raw(port, b"POST /ips HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: %d\r\n\r\n" % len(big) + big), 413, "too large")
        headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(100))
        assert_json_error(raw(port, b"GET /ips HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n"), 431, "too large")
        assert_json_error(raw(port, b"POST /ips HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"), 400,
                          "bad request")
        for garbage in (b"\x16\x03\x01 garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"get /ips HTTP/1.1"):
            assert_json_error(raw(port, garbage + b"\r\nHost: a\r\n\r\n"), 400, "bad request")
        # A malformed header line is not quoted back: it may carry credentials.
        status, _, body = raw(port, f"GET /ips HTTP/1.1\r\nHost: a\r\nAuthorization {RIGHT}\r\n\r\n".encode())
        assert status == 400 and RIGHT.split()[1] not in json.dumps(body), body
        # And the server still answers properly afterwards.
        assert get(port, authorization=RIGHT)[0] == 200


# --- point 9: deadlines and the loopback pool ---------------------------------------------------

def test_a_request_trickled_byte_by_byte_is_cut_at_the_deadline() -> None:
    with serving(request_deadline=1) as port, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = b"GET /ips HTTP/1.1\r\nHost: a\r\n" + b"X-Slow: " + b"z" * 200
        closed = False
        for byte in request:  # 230 bytes at 50 ms: 11 s if nothing cuts it
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
        if not closed:
            sock.settimeout(5)
            try:
                closed = sock.recv(100) == b""
            except ConnectionResetError:
                closed = True
        assert closed, "the server kept a connection that never finished its request"
        assert get(port, authorization=RIGHT)[0] == 200


def test_a_whole_request_sent_slowly_within_the_deadline_is_answered() -> None:
    with serving(request_deadline=5) as port, socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for part in (b"GET /version HTTP/1.1\r\n", b"Host: a\r\n", f"Authorization: {RIGHT}\r\n".encode(), b"\r\n"):
            sock.sendall(part)
            time.sleep(0.3)
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_loopback_is_served_past_waitress_connection_limit_of_100() -> None:
    with serving() as port, contextlib.ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5)) for _ in range(120)]
        assert len(idle) == 120
        status, _, body = get(port, authorization=RIGHT, timeout=2)
        assert status == 200 and body == {"ips": []}


class FakeChannel:
    def __init__(self, peer: str, busy: bool = False) -> None:
        self.peer = peer
        self.requests = ["a request being answered"] if busy else []
        self.will_close = False
        self.pools: tuple[str, ...] = ()


def test_pools_make_room_by_closing_the_oldest_idle_connection_and_keep_loopback_apart() -> None:
    pools = Pools(per_peer=3, remote=5, local=2)
    joined = []
    for _ in range(3):
        channel = FakeChannel("198.51.100.2")
        admitted = pools.admit(channel.peer)
        assert admitted == ("198.51.100.2", REMOTE_POOL)
        pools.join(channel, admitted)  # type: ignore[arg-type]
        joined.append(channel)
    # A fourth from the same address: the oldest idle one makes room.
    newcomer = FakeChannel("198.51.100.2")
    pools.join(newcomer, pools.admit(newcomer.peer))  # type: ignore[arg-type,arg-type]
    assert joined[0].will_close and not joined[1].will_close and pools.count("198.51.100.2") == 3
    # Every one being answered: a newcomer is refused rather than cutting an answer short.
    for channel in (*joined[1:], newcomer):
        channel.requests = ["busy"]
    assert pools.admit("198.51.100.2") is None
    # Other addresses fill the network pool (5); loopback has its own and is untouched.
    for i in range(2):
        pools.join(FakeChannel(f"203.0.113.{i}"), pools.admit(f"203.0.113.{i}"))  # type: ignore[arg-type]
    assert pools.count(REMOTE_POOL) == 5
    local = FakeChannel("127.0.0.1")
    assert pools.admit("::1") == pools.admit("127.0.0.1") == (LOCAL_POOL,)
    pools.join(local, (LOCAL_POOL,))  # type: ignore[arg-type]
    pools.leave(local)  # type: ignore[arg-type]
    assert pools.count(LOCAL_POOL) == 0 and local.pools == ()
