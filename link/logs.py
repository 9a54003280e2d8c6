"""Logging to stderr, one line per record, with the process's role in every line.

LOGGER_TYPE=text (default) writes `time LEVEL [role] logger: message`; LOGGER_TYPE=json one
JSON object per line. Writing never blocks the process that logs (see `link.log_handlers`):
a stalled stderr costs log lines, never a lease.
"""
from __future__ import annotations

import logging

from link.log_handlers import FLUSH_TIMEOUT, JsonFormatter, NonBlockingHandler, ThreadedHandler, text_formatter


def setup(level: str, role: str, *, fmt: str = "text", vip: str | None = None, threaded: bool = True) -> None:
    """(Re)configure the root logger; called by the supervisor and again in each child.

    `threaded`: a writer thread of this process writes the lines (workers, API). The
    supervisor passes False: it forks, so it must hold no thread, and writes without blocking.
    Handlers inherited through a fork are closed here, never reused.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, (NonBlockingHandler, ThreadedHandler)):
            old.close()
    handler: logging.Handler = ThreadedHandler() if threaded else NonBlockingHandler()
    handler.setFormatter(JsonFormatter(role, vip) if fmt == "json" else text_formatter(role))
    root.addHandler(handler)
    root.setLevel(level)
    # Their debug output is per netlink message / gRPC frame: useless at our debug level.
    for noisy in ("pyroute2", "scapy", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def set_level(level: str) -> None:
    """Change the level of this process's logging (SIGHUP)."""
    root = logging.getLogger()
    root.setLevel(level)
    for noisy in ("pyroute2", "scapy", "grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def pump() -> None:
    """Write what the supervisor's handler kept back while stderr was full (each loop turn)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, NonBlockingHandler):
            handler.pump()


def flush(timeout: float = FLUSH_TIMEOUT) -> None:
    """Give the lines logged so far a bounded chance to reach stderr (before os._exit)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, (NonBlockingHandler, ThreadedHandler)):
            handler.flush(timeout)
