"""Logging that never waits for stderr: a pipe nobody reads must not block the process that
logs; lines past the buffer are dropped and counted; and the two line formats."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time

import pytest

from link import log_handlers
from link.log_handlers import JsonFormatter, NonBlockingHandler, ThreadedHandler, text_formatter

F_SETPIPE_SZ = 1031


def small_pipe() -> tuple[int, int]:
    """A pipe whose buffer is one page, so a few lines fill it."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    return r, w


def record(msg: str, *args: object, level: int = logging.INFO, name: str = "link.test") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def read_available(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read `fd` until `needle` was seen (bounded), as a log reader that resumes."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got and time.monotonic() < deadline:
        got += read_available(fd)
        time.sleep(0.01)
    return got


def lines_of(data: bytes) -> list[str]:
    return data.decode().splitlines()


def dropped_count(lines: list[str]) -> int:
    return sum(int(line.split(" log lines dropped")[0].rsplit(" ", 1)[-1]) for line in lines if "log lines dropped" in line)


def test_a_stalled_pipe_costs_lines_not_time_with_the_writer_thread() -> None:
    r, w = small_pipe()
    handler = ThreadedHandler(fd=w, limit=50)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        total = 400  # ~10 KiB: more than the pipe and the buffer hold together
        for n in range(total):
            handler.handle(record("line %04d %s", n, "x" * 20))  # would block here without the thread
        assert handler.buffer.dropped_total > 0
        lines = lines_of(read_until(r, b"log lines dropped"))
        lines += lines_of(read_until(r, b"line %04d" % (total - 1), timeout=0.5))
        kept = [line for line in lines if line.startswith("line ")]
        assert len(kept) + dropped_count(lines) == total
        # The notice stands where lines are missing: what was kept before it is in order.
        numbers = [int(line.split()[1]) for line in kept]
        assert numbers == sorted(numbers) and numbers[0] == 0
    finally:
        read_available(r)
        handler.close()
        os.close(r)
        os.close(w)


def test_the_supervisors_handler_never_blocks_nor_makes_the_pipe_non_blocking() -> None:
    r, w = small_pipe()
    handler = NonBlockingHandler(fd=w, limit=30)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for n in range(300):
            handler.handle(record("line %04d %s", n, "y" * 40))
        assert os.get_blocking(w), "the shared open file must stay blocking for everyone else"
        assert handler.buffer.dropped_total > 0
        got = read_available(r)
        handler.pump()  # a turn of the supervisor's loop, once the reader is back
        got += read_available(r)
        handler.flush(1.0)
        got += read_available(r)
        lines = lines_of(got)
        kept = [line for line in lines if line.startswith("line ")]
        assert len(kept) + dropped_count(lines) == 300
        assert "log lines dropped" in got.decode()
    finally:
        handler.close()
        os.close(r)
        os.close(w)


def test_the_supervisors_handler_on_a_socket_like_journald() -> None:
    ours, reader = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    handler = NonBlockingHandler(fd=ours.fileno(), limit=20)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for n in range(2000):
            handler.handle(record("line %04d %s", n, "z" * 60))
        assert handler.buffer.dropped_total > 0
        reader.setblocking(False)
        got = b""
        for _ in range(1000):  # bounded: drain, let the handler write again, until it is done
            try:
                got += reader.recv(1 << 20)
            except BlockingIOError:
                handler.pump()
                if handler.buffer.empty():
                    break
        try:
            got += reader.recv(1 << 20)
        except BlockingIOError:
            pass
        lines = lines_of(got)
        kept = [line for line in lines if line.startswith("line ")]
        assert len(kept) + dropped_count(lines) == 2000
    finally:
        handler.close()
        ours.close()
        reader.close()


def test_a_forked_child_does_not_write_its_parents_backlog_again() -> None:
    r, w = small_pipe()
    handler = NonBlockingHandler(fd=w, limit=1000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    try:
        for n in range(200):
            handler.handle(record("line %04d %s", n, "y" * 40))
        assert not handler.buffer.empty()
        log_handlers._after_fork_in_child()  # what os.fork runs in the child
        assert handler.buffer.empty()
    finally:
        handler.close()
        os.close(r)
        os.close(w)


def test_flush_waits_a_bounded_time_for_a_stalled_reader() -> None:
    r, w = small_pipe()
    handler = ThreadedHandler(fd=w, limit=100)
    try:
        for n in range(200):
            handler.handle(record("line %04d %s", n, "x" * 60))
        start = time.monotonic()
        handler.flush(0.2)
        assert time.monotonic() - start < 5  # returned although nothing reads the pipe
    finally:
        drain = threading.Thread(target=read_until, args=(r, b"log lines dropped", 5.0))  # the reader comes back
        drain.start()
        handler.close()
        drain.join(10)
        os.close(r)
        os.close(w)


def test_json_lines_carry_time_level_role_logger_msg_and_vip() -> None:
    formatter = JsonFormatter("worker 198.51.100.50/32", vip="198.51.100.50/32")
    line = formatter.format(record("%s is %s", "198.51.100.50/32", "ACTIVATED", level=logging.WARNING, name="link.worker.main"))
    entry = json.loads(line)
    assert entry["level"] == "warning" and entry["role"] == "worker 198.51.100.50/32"
    assert entry["logger"] == "link.worker.main" and entry["msg"] == "198.51.100.50/32 is ACTIVATED"
    assert entry["vip"] == "198.51.100.50/32" and entry["time"].endswith("Z")
    assert "\n" not in line


def test_json_lines_of_the_supervisor_have_no_vip_and_keep_tracebacks_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("link.supervisor", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    line = JsonFormatter("supervisor").format(rec)
    entry = json.loads(line)
    assert "vip" not in entry and entry["role"] == "supervisor"
    assert "ValueError: boom" in entry["error"] and "\n" not in line


def test_text_lines_name_the_role() -> None:
    line = text_formatter("worker 198.51.100.50/32").format(record("hello"))
    assert "INFO [worker 198.51.100.50/32] link.test: hello" in line


@pytest.mark.parametrize("threaded", [True, False])
def test_setup_replaces_the_handlers_and_sets_the_format(threaded: bool) -> None:
    from link import logs

    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), root.level
    try:
        logs.setup("DEBUG", "api", fmt="json", threaded=threaded)
        ours = [h for h in root.handlers if isinstance(h, (ThreadedHandler, NonBlockingHandler))]
        assert len(ours) == 1 and isinstance(ours[0], ThreadedHandler if threaded else NonBlockingHandler)
        assert isinstance(ours[0].formatter, JsonFormatter) and root.level == logging.DEBUG
        logs.flush(0.5)
        logs.pump()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in before_handlers:
            root.addHandler(handler)
        root.setLevel(before_level)
