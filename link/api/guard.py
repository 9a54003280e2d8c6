"""Failed logins per peer: a log line at most once a minute per peer, and a 429 for a minute
to a peer that failed 20 times within a minute (issue "Secure by default", point 5).

Loopback peers are limited like any other: a local brute force is still one. Their block ends
after a minute like everyone's, so the local admin who mistyped is never locked out for long.
The table is bounded: a peer's entry goes once it has nothing left to remember (nor a line
logged within the minute), and past MAX_PEERS the least recently seen peer is forgotten (a flood of addresses can at worst reset
its own counters, never grow the memory). IPv6 peers count per /64, the least a LAN host gets.
"""
from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger(__name__)

MAX_FAILURES = 20  # failed attempts within WINDOW that get a peer blocked
WINDOW = 60.0  # seconds
BLOCK = 60.0  # seconds a blocked peer gets 429
LOG_EVERY = 60.0  # seconds between two "refused credentials" lines about one peer
MAX_PEERS = 4096  # peers remembered at once


def peer_key(address: str) -> str:
    """Who a failure is counted against: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Peer:
    address: str  # as last seen, for the log
    failures: deque[float] = field(default_factory=deque)  # times of the failures within WINDOW
    blocked_until: float = 0.0
    blocked_at: float = 0.0
    said_at: float | None = None  # when the last line about this peer was logged
    held_back: int = 0  # failures since that line that no line told
    block_untold: bool = False  # blocked less than LOG_EVERY after a line: told later


Line = tuple[int, str, tuple[object, ...]]  # level, format, arguments: logged outside the lock


class FailureGuard:
    """Thread-safe: waitress serves requests from several threads.

    At most one line per peer per `log_every` seconds, the block included: a peer whose first
    failure was just logged and that is blocked seconds later gets its block told once a minute
    has passed since that line, on the first request (anyone's) after that. Only a flood of
    more than `max_peers` addresses, which pushes peers out of the table, can get a peer that
    comes back a line sooner.
    """

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = WINDOW,
        block: float = BLOCK,
        log_every: float = LOG_EVERY,
        max_peers: int = MAX_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.log_every = log_every
        self.max_peers = max_peers
        self.clock = clock
        self._lock = threading.Lock()
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._untold: set[str] = set()  # keys of peers with a block_untold

    def __len__(self) -> int:
        return len(self._peers)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again, or None when it is not blocked."""
        now = self.clock()
        with self._lock:
            lines = self._tell_due(now)
            peer = self._peers.get(peer_key(address))
            wait = None if peer is None or peer.blocked_until <= now else max(1, math.ceil(peer.blocked_until - now))
        _log(lines)
        return wait

    def failed(self, address: str) -> None:
        """One failed attempt from `address`: log it (throttled), block it past the limit."""
        now = self.clock()
        key = peer_key(address)
        with self._lock:
            lines = self._expire(now)
            peer = self._peers.get(key)
            if peer is None:
                peer = self._peers[key] = _Peer(address)
                while len(self._peers) > self.max_peers:
                    self._peers.popitem(last=False)
            self._peers.move_to_end(key)
            peer.address = address
            peer.failures.append(now)
            while peer.failures and peer.failures[0] <= now - self.window:
                peer.failures.popleft()
            blocked = len(peer.failures) >= self.max_failures
            if blocked:
                peer.failures.clear()
                peer.blocked_at, peer.blocked_until = now, now + self.block
            if not self._may_say(peer, now):
                peer.held_back += 1
                if blocked:
                    peer.block_untold = True
                    self._untold.add(key)
            elif blocked:
                lines.append(self._said(peer, now, logging.WARNING, "%s failed to authenticate %d times within %g s: "
                                        "it gets 429 for %g s%s", address, self.max_failures, self.window, self.block))
            else:
                lines.append(self._said(peer, now, logging.INFO, "refused credentials from %s%s", address))
            lines += self._tell_due(now)
        # The address only: what was sent (user, password) is never logged.
        _log(lines)

    def _may_say(self, peer: _Peer, now: float) -> bool:
        return peer.said_at is None or now - peer.said_at >= self.log_every

    def _said(self, peer: _Peer, now: float, level: int, fmt: str, *args: object) -> Line:
        """A line about `peer` (its last format argument: the held-back count), and the peer's
        memory of it; the caller logs it once the lock is released."""
        more = f" ({peer.held_back} more since the last line)" if peer.held_back else ""
        peer.said_at, peer.held_back = now, 0
        return level, fmt, (*args, more)

    def _tell_block(self, key: str, peer: _Peer, now: float) -> Line:
        peer.block_untold = False
        self._untold.discard(key)
        return self._said(peer, now, logging.WARNING, "%s failed to authenticate %d times within %g s, %.0f s ago: it "
                          "got 429 for %g s%s", peer.address, self.max_failures, self.window, now - peer.blocked_at,
                          self.block)

    def _tell_due(self, now: float) -> list[Line]:
        """The blocks not told yet whose peer had no line for `log_every` seconds."""
        lines = []
        for key in list(self._untold):
            peer = self._peers.get(key)
            if peer is None or not peer.block_untold:
                self._untold.discard(key)  # pushed out of the table by a flood
            elif self._may_say(peer, now):
                lines.append(self._tell_block(key, peer, now))
        return lines

    def _expire(self, now: float) -> list[Line]:
        """Forget peers with nothing left to remember, oldest first (the dict is in LRU order).
        One with something untold gets its line first and is forgotten a minute later, so that
        coming back at once gets it no second line within the minute."""
        # Kept a while past the window so a peer that comes back just after a minute gets its
        # held-back count on the line it causes, not on a separate one.
        horizon = self.window + self.log_every
        lines: list[Line] = []
        for _ in range(len(self._peers)):  # each peer looked at once at most
            key, peer = next(iter(self._peers.items()))
            last = peer.failures[-1] if peer.failures else peer.blocked_until - self.block
            if peer.blocked_until > now or now - last < horizon or not self._may_say(peer, now):
                break
            if peer.block_untold:
                lines.append(self._tell_block(key, peer, now))
            elif peer.held_back:
                peer.said_at = now
                lines.append((logging.INFO, "refused credentials from %s %d more times after the last line about it",
                              (peer.address, peer.held_back)))
                peer.held_back = 0
            else:
                del self._peers[key]
                continue
            self._peers.move_to_end(key)
        return lines


def _log(lines: list[Line]) -> None:
    for level, fmt, args in lines:
        log.log(level, fmt, *args)
