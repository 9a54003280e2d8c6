"""Rate-limit a worker's repeated warnings about the same trouble (etcd not answering).

A worker runs a cycle per tick (667 ms by default). Logging every failed cycle of a long etcd
outage at WARNING gives 1.5 lines a second per VIP: with hundreds of VIPs, hundreds of
thousands of lines an hour in the journal, and the logging itself costs CPU just when the
machine may be short of it. The first warning of a streak is logged, then one per
`every` seconds carrying how many were held back, and one line when the trouble ends.
"""
from __future__ import annotations

import time
from typing import Callable

DEFAULT_EVERY = 30.0  # seconds between two warnings of one streak


class WarningThrottle:
    def __init__(self, every: float = DEFAULT_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._last: float | None = None  # when the streak's last warning was logged
        self.held_back = 0  # warnings of the streak not logged since that one

    def trouble(self) -> tuple[bool, int]:
        """One more troubled cycle: (log it as a warning?, warnings held back before it)."""
        now = self.clock()
        if self._last is None or now - self._last >= self.every:
            held, self.held_back, self._last = self.held_back, 0, now
            return True, held
        self.held_back += 1
        return False, 0

    def clear(self) -> int | None:
        """A cycle without trouble: None if there was no streak, else the warnings held back
        since its last logged one (so the caller can say the trouble is over)."""
        if self._last is None:
            return None
        held, self.held_back, self._last = self.held_back, 0, None
        return held
