"""Track interfaces (keepalived's `track_interface`): a host whose INTERFACE, or any interface
of TRACK_INTERFACES, has lost its carrier cannot serve a VIP, so the VIP goes FAILING.

The tracker reads the link news of link.adapters.carrier (woken by the kernel's notification,
from the worker's selector loop) and turns a change of verdict into an event of the VIP's
table: `carrier_lost` when the first tracked interface goes, `carrier_back` when the last one
comes back. Whether the VIP may leave FAILING then is the worker's call (its health checks
may still fail: link.worker.main.Worker.recover).
"""
from __future__ import annotations

import logging
import select
import time
from typing import Callable, Sequence

from link.adapters.carrier import LinkNews, LinkWatch
from link.vocabulary.vip_states import Event

logger = logging.getLogger(__name__)

LinkWatchFactory = Callable[[Sequence[str]], LinkWatch]
BOOT_WAIT = 1.0  # the longest boot waits for the kernel's answers (it answers in microseconds)


class CarrierTracker:
    def __init__(self, watch: LinkWatch, label: str = "") -> None:
        self.watch = watch
        self._label = f"{label}: " if label else ""
        # name -> why it has no carrier; every name starts unknown, hence down, until the kernel answers
        self._down: dict[str, str] = dict.fromkeys(watch.names, "not known yet")
        self._index: dict[str, int] = {}
        self.lost = False  # the verdict last turned into an event
        self._lost_on: list[str] = []  # the interfaces down when it was

    def fileno(self) -> int:
        return self.watch.fileno()

    def start(self, wait: float = BOOT_WAIT) -> None:
        """Ask the kernel for the tracked interfaces' state and wait (bounded) for its answers:
        a host that boots without carrier starts FAILING, never takes the lock first."""
        self.watch.ask()
        deadline = time.monotonic() + wait
        for _ in range(100):  # bounded twice: in turns and in time
            left = deadline - time.monotonic()
            if not self.watch.waiting or left <= 0:
                break
            select.select([self.watch], [], [], left)
            self._take(self.watch.read())
        for name, why in self._down.items():
            if why == "not known yet":
                self._down[name] = "the kernel did not say"

    def _take(self, news: list[LinkNews]) -> None:
        for item in news:
            for name, index in list(self._index.items()):
                # The index of a tracked name now has another name: ours is gone (renamed).
                if item.index and index == item.index and name != item.name:
                    self._down[name] = f"renamed {item.name}"
                    del self._index[name]
            if item.name not in self.watch.names:
                continue
            if item.present:
                self._index[item.name] = item.index
            else:
                self._index.pop(item.name, None)
            was = self._down.get(item.name)
            if item.carrier:
                self._down.pop(item.name, None)
            else:
                self._down[item.name] = item.why_not()
            if was != self._down.get(item.name):
                logger.debug("%s%s: %s", self._label, item.name, self._down.get(item.name, "carrier"))

    def look(self) -> tuple[Event | None, str]:
        """Read what the kernel said since the last look; the event it calls for (None: the
        verdict did not change) and the reason."""
        self._take(self.watch.read())
        return self.judge()

    def judge(self) -> tuple[Event | None, str]:
        lost = bool(self._down)
        if lost == self.lost:
            return None, ""
        self.lost = lost
        if lost:
            self._lost_on = list(self._down)
            return Event.CARRIER_LOST, self.why()
        back, self._lost_on = self._lost_on, []
        return Event.CARRIER_BACK, f"carrier back on {', '.join(back)}"

    def why(self) -> str:
        """Why the VIP may not be held here now ("" when every tracked interface has carrier)."""
        if not self._down:
            return ""
        return "carrier lost on " + "; ".join(f"{name} ({why})" for name, why in self._down.items())

    def close(self) -> None:
        self.watch.close()
