"""Failed logins per peer: a log line at most once a minute per peer, and a 429 for a minute
to a peer that failed 20 times within a minute (issue "Secure by default", point 5).

Loopback peers are limited like any other: a local brute force is still one. Their block ends
after a minute like everyone's, so the local admin who mistyped is never locked out for long.
The table is bounded: a peer's entry goes once it has nothing left to remember, and past
MAX_PEERS the least recently seen peer is forgotten (a flood of addresses can at worst reset
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

from link.worker.warn_throttle import WarningThrottle

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
    throttle: WarningThrottle
    failures: deque[float] = field(default_factory=deque)  # times of the failures within WINDOW
    blocked_until: float = 0.0


class FailureGuard:
    """Thread-safe: waitress serves requests from several threads."""

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

    def __len__(self) -> int:
        return len(self._peers)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until `address` may try again, or None when it is not blocked."""
        now = self.clock()
        with self._lock:
            peer = self._peers.get(peer_key(address))
            if peer is None or peer.blocked_until <= now:
                return None
            return max(1, math.ceil(peer.blocked_until - now))

    def failed(self, address: str) -> None:
        """One failed attempt from `address`: log it (throttled), block it past the limit."""
        now = self.clock()
        key = peer_key(address)
        with self._lock:
            forgotten = self._expire(now)
            peer = self._peers.get(key)
            if peer is None:
                peer = self._peers[key] = _Peer(address, WarningThrottle(self.log_every, self.clock))
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
                peer.blocked_until = now + self.block
            show, held_back = peer.throttle.trouble()
        # The address only: what was sent (user, password) is never logged.
        for gone in forgotten:
            log.info("refused credentials from %s %d more times after the last line about it", gone.address,
                     gone.throttle.held_back)
        if blocked:
            log.warning("%s failed to authenticate %d times within %g s: it gets 429 for %g s",
                        address, self.max_failures, self.window, self.block)
        elif show:
            more = f" ({held_back} more since the last line)" if held_back else ""
            log.info("refused credentials from %s%s", address, more)

    def _expire(self, now: float) -> list[_Peer]:
        """Forget peers with nothing left to remember, oldest first (the dict is in LRU order);
        returns those whose last failures were not logged yet, so their count still is."""
        # Kept a while past the window so a peer that comes back just after a minute gets its
        # held-back count on the line it causes, not on a separate one.
        horizon = self.window + self.log_every
        forgotten = []
        while self._peers:
            key, peer = next(iter(self._peers.items()))
            last = peer.failures[-1] if peer.failures else peer.blocked_until - self.block
            if peer.blocked_until > now or now - last < horizon:
                break
            del self._peers[key]
            if peer.throttle.held_back:
                forgotten.append(peer)
        return forgotten
