"""Log handlers that never make the agent wait for its stderr, and the two line formats.

A worker refreshes its lease every tick. If whoever reads our stderr (journald, a pipe to a
log shipper, a terminal paused with ^S) stops reading, a plain StreamHandler blocks in write()
and the lease expires: a stalled log reader would move the VIPs. So:

* workers and the API process (threads are fine there) format each record in the caller and
  hand the line to a bounded `LineBuffer` through a QueueHandler (`ThreadedHandler`); one
  writer thread per process, started after the fork, writes to fd 2 and is the only one that
  may block.
* the supervisor forks at any time, so it holds no thread: its `NonBlockingHandler` writes
  straight away without ever blocking, keeps what it could not write in the same kind of
  bounded buffer, and retries on its next record and on every turn of the supervisor's loop.

When a buffer is full, lines are dropped and counted; a line "N log lines dropped" is written
where they are missing, once writing resumes.
"""
from __future__ import annotations

import collections
import datetime
import json
import logging
import logging.handlers
import os
import select
import socket
import stat
import threading
import time
import weakref
from typing import Callable

# Lines a process keeps while its stderr is not read. Enough for a burst (a traceback, a
# flurry of transitions); past that, a stderr stalled for long costs lines, not memory.
BUFFER_LINES = 512
FLUSH_TIMEOUT = 1.0  # at exit: how long the last lines may wait for a stalled stderr


class Gap:
    """Where lines were dropped from a buffer, and how many."""

    def __init__(self) -> None:
        self.count = 0


Item = bytes | Gap


class LineBuffer:
    """A bounded FIFO of encoded lines that drops (and counts) what does not fit.

    Thread-safe; `put_nowait` never blocks, so it can serve as a QueueHandler's queue.
    """

    def __init__(self, limit: int = BUFFER_LINES) -> None:
        self.limit = limit
        self.dropped_total = 0
        self._items: collections.deque[Item] = collections.deque()
        self._lines = 0
        self._open_gap: Gap | None = None  # the gap at the end of the buffer, still growing
        self._unfinished = 0  # items taken by the writer but not written yet
        self._closed = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def put_nowait(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            if self._lines >= self.limit:
                if self._open_gap is None:
                    self._open_gap = Gap()
                    self._items.append(self._open_gap)
                self._open_gap.count += 1
                self.dropped_total += 1
                return
            self._open_gap = None  # the next drop starts a new gap after this line
            self._items.append(data)
            self._lines += 1
            self._changed.notify_all()

    def _pop(self) -> Item | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, Gap):
            if item is self._open_gap:
                self._open_gap = None
        else:
            self._lines -= 1
        self._unfinished += 1
        return item

    def get(self) -> Item | None:
        """The next item, waiting for one; None once closed and empty."""
        with self._lock:
            while not self._items and not self._closed:
                self._changed.wait()
            return self._pop()

    def get_nowait(self) -> Item | None:
        with self._lock:
            return self._pop()

    def unget(self, data: bytes) -> None:
        """Put back the part of a line that could not be written (it goes out first)."""
        with self._lock:
            self._items.appendleft(data)
            self._lines += 1
            self._unfinished -= 1

    def done(self) -> None:
        """The item last taken is written (or given up)."""
        with self._lock:
            self._unfinished -= 1
            self._changed.notify_all()

    def empty(self) -> bool:
        with self._lock:
            return not self._items and self._unfinished <= 0

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._items or self._unfinished > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._changed.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._lines, self._unfinished, self._open_gap = 0, 0, None


def _notice(formatter: logging.Formatter | None, count: int) -> bytes:
    record = logging.LogRecord("link.logs", logging.WARNING, __file__, 0,
                               "%d log lines dropped: stderr was not read fast enough", (count,), None)
    return ((formatter or logging.Formatter()).format(record) + "\n").encode("utf-8", "replace")


def _encode(handler: logging.Handler, record: logging.LogRecord) -> bytes:
    return (handler.format(record) + "\n").encode("utf-8", "replace")


# -- workers and the API process ------------------------------------------------------------
class ThreadedHandler(logging.handlers.QueueHandler):
    """Formats in the caller, queues without blocking, writes on a thread of this process.

    Create it in the process that logs (after the fork): the thread belongs to that process.
    """

    def __init__(self, fd: int = 2, limit: int = BUFFER_LINES) -> None:
        self.buffer = LineBuffer(limit)
        super().__init__(self.buffer)  # a LineBuffer has put_nowait, all QueueHandler needs
        self.fd = fd
        self._thread = threading.Thread(target=self._write_lines, name="log-writer", daemon=True)
        self._thread.start()

    def prepare(self, record: logging.LogRecord) -> bytes:
        # The final line, made here: the record's arguments may change once we return.
        return _encode(self, record)

    def _write_lines(self) -> None:
        # Ends when the buffer is closed and drained (close(), at exit).
        while True:
            item = self.buffer.get()
            if item is None:
                return
            data = _notice(self.formatter, item.count) if isinstance(item, Gap) else item
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                pass  # stderr is gone (EPIPE, EBADF): nobody can read the line anyway
            finally:
                self.buffer.done()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait (bounded) until the lines queued so far are written."""
        if self._thread.is_alive():
            self.buffer.wait_empty(timeout)

    def close(self) -> None:
        self.flush()
        self.buffer.close()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(FLUSH_TIMEOUT)
        super().close()


# -- the supervisor ---------------------------------------------------------------------------
class _Out:
    """A way to write to an fd without blocking, chosen by what the fd is."""

    def __init__(self, fd: int) -> None:
        self.fd = fd  # polled for POLLOUT while flushing
        self.close: Callable[[], None] = lambda: None
        self.write: Callable[[bytes], int] = lambda data: os.write(fd, data)
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return
        if stat.S_ISSOCK(mode):  # journald's stream socket under systemd
            sock = socket.socket(fileno=os.dup(fd))
            self.write = lambda data: sock.send(data, socket.MSG_DONTWAIT)
            self.close = sock.close
        elif stat.S_ISFIFO(mode):
            # O_NONBLOCK belongs to the open file, which fd 2 shares with our children and the
            # program that started us: opening the pipe anew gives a non-blocking file of our own.
            try:
                own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return
            self.fd = own
            self.write = lambda data: os.write(own, data)
            self.close = lambda: os.close(own)
        # A terminal or a file: plain writes (a file does not stall; a terminal only on ^S).


_LIVE: weakref.WeakSet["NonBlockingHandler"] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A child must not write its parent's backlog a second time.
    for handler in list(_LIVE):
        handler.buffer.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class NonBlockingHandler(logging.Handler):
    """For the single-threaded supervisor: writes now if it can, else keeps the line for later."""

    def __init__(self, fd: int = 2, limit: int = BUFFER_LINES) -> None:
        super().__init__()
        self.buffer = LineBuffer(limit)
        self._out = _Out(fd)
        _LIVE.add(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.buffer.put_nowait(_encode(self, record))
        except Exception:
            self.handleError(record)
            return
        self._pump()

    def pump(self) -> None:
        """Write what the buffer holds, as far as the fd takes it now."""
        self.acquire()
        try:
            self._pump()
        finally:
            self.release()

    def _pump(self) -> None:
        for _ in range(2 * self.buffer.limit + 2):  # bounded: every item once at most
            item = self.buffer.get_nowait()
            if item is None:
                return
            data = _notice(self.formatter, item.count) if isinstance(item, Gap) else item
            try:
                written = self._out.write(data)
            except BlockingIOError:
                self.buffer.unget(data)
                return
            except OSError:
                written = len(data)  # stderr is gone: drop the line
            if written < len(data):
                self.buffer.unget(data[written:])
                return
            self.buffer.done()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Write the backlog, waiting for the fd at most `timeout` seconds (at exit)."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self._out.fd, select.POLLOUT)
        for _ in range(1000):  # bounded by the deadline too
            self.pump()
            left = deadline - time.monotonic()
            if self.buffer.empty() or left <= 0:
                return
            poller.poll(max(1, int(min(left, 0.1) * 1000)))

    def close(self) -> None:
        _LIVE.discard(self)
        self._out.close()
        self._out = _Out(-1)  # writes now fail quietly (EBADF) instead of reaching a reused fd
        super().close()


# -- formats ----------------------------------------------------------------------------------
def text_formatter(role: str) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, as LinK's LOGGER_TYPE=json: time, level, role, logger, msg,
    and vip for a worker's lines."""

    def __init__(self, role: str, vip: str | None = None) -> None:
        super().__init__()
        self.role, self.vip = role, vip

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        entry: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "role": self.role,
        }
        if self.vip:
            entry["vip"] = self.vip
        entry["logger"] = record.name
        entry["msg"] = record.getMessage()
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
