"""The chaos run's observer: which host holds which VIP, every few milliseconds, all along."""
from __future__ import annotations

import ipaddress
import threading
import time

from tests.lab.addrdump import AddressDump
from tests.lab.lab import IFACE, Lab

from .judge import Episode


class Observer:
    """Samples every host every `interval` s in a thread of its own; records gap and double
    episodes per VIP. Bounded: stops after `limit` seconds whatever happens."""

    def __init__(self, lab: Lab, vips: list[str], interval: float = 0.003, limit: float = 3600.0) -> None:
        self.lab, self.vips, self.interval, self.limit = lab, vips, interval, limit
        self.addrs = {ipaddress.ip_interface(v).ip.packed: v for v in vips}
        self.episodes: list[Episode] = []
        self.samples = 0
        self.max_step = 0.0
        self.error: str | None = None
        self._open: dict[str, tuple[str, float, set, int]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-observer", daemon=True)

    def start(self) -> "Observer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the observer did not start: {self.error}")
        if self.error:
            raise RuntimeError(f"the observer did not start: {self.error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        dumps: dict[str, AddressDump] = {}
        try:
            for h in self.lab.hosts:
                dumps[h.name] = AddressDump(h.ns, IFACE)
        except Exception as exc:  # noqa: BLE001 - reported by start()
            self.error = repr(exc)
            self._ready.set()
            for dump in dumps.values():
                dump.close()
            return
        self._ready.set()
        deadline = time.monotonic() + self.limit
        last = time.monotonic()
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                holders: dict[str, set] = {v: set() for v in self.vips}
                for name, dump in dumps.items():
                    if not dump.link_up():  # a downed link answers nobody
                        continue
                    for raw in dump.packed() & self.addrs.keys():
                        holders[self.addrs[raw]].add(name)
                now = time.monotonic()
                self.max_step = max(self.max_step, now - last)
                last = now
                self.samples += 1
                for vip, hs in holders.items():
                    self._feed(vip, now, hs)
                self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - a namespace going away at the very end
            if not self._stop.is_set():
                self.error = repr(exc)
        finally:
            end = time.monotonic()
            for vip in list(self._open):
                self._close(vip, end)
            for dump in dumps.values():
                dump.close()

    def _feed(self, vip: str, now: float, hosts: set) -> None:
        kind = "gap" if not hosts else "double" if len(hosts) > 1 else None
        current = self._open.get(vip)
        if current is not None and current[0] != kind:
            self._close(vip, now)
            current = None
        if kind is None:
            return
        if current is None:
            self._open[vip] = (kind, now, set(hosts), 1)
        else:
            self._open[vip] = (kind, current[1], current[2] | hosts, current[3] + 1)

    def _close(self, vip: str, end: float) -> None:
        kind, start, hosts, n = self._open.pop(vip)
        # One sample reads the hosts one after the other: a clean hand-over can show two
        # holders once. A real double lasts two samples or more.
        if kind == "double" and n < 2:
            return
        self.episodes.append(Episode(vip, kind, start, end, frozenset(hosts), n))
