"""Logging to stderr, one line per record, with the process's role in every line."""
from __future__ import annotations

import logging
import sys


def setup(level: str, role: str) -> None:
    """(Re)configure the root logger; called by the supervisor and again in each child."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s"))
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
