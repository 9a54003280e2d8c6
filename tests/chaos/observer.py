"""The chaos run's observer: which host holds which VIP, every few milliseconds, all along, and
where the client's neighbour entry for each VIP points."""
from __future__ import annotations

import ipaddress
import threading
import time

from tests.lab.addrdump import AddressDump
from tests.lab.lab import IFACE, Lab

from .judge import ClientView, Episode


class Observer:
    """Samples every host every `interval` s in a thread of its own; records gap and double
    episodes per VIP, and each VIP's client view: its holder set and the client's neighbour
    entry, when either changes (the entry is read every NEIGH_EVERY samples: tens of ms apart,
    against a bound of seconds). Bounded: stops after `limit` seconds whatever happens."""

    NEIGH_EVERY = 4

    def __init__(self, lab: Lab, vips: list[str], interval: float = 0.003, limit: float = 3600.0) -> None:
        self.lab, self.vips, self.interval, self.limit = lab, vips, interval, limit
        self.addrs = {ipaddress.ip_interface(v).ip.packed: v for v in vips}
        self.episodes: list[Episode] = []
        self.views: dict[str, ClientView] = {v: ClientView() for v in vips}
        self.stopped_at: float | None = None
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
            client = AddressDump(self.lab.client_ns, IFACE)
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
                    self._view_holders(vip, now, frozenset(hs))
                if self.samples % self.NEIGH_EVERY == 1:
                    entries = client.neighbours()
                    for vip in self.vips:
                        self._view_neigh(vip, time.monotonic(), entries.get(vip.split("/")[0]))
                self._stop.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 - a namespace going away at the very end
            if not self._stop.is_set():
                self.error = repr(exc)
        finally:
            end = self.stopped_at = time.monotonic()
            for vip in list(self._open):
                self._close(vip, end)
            for dump in [*dumps.values(), client]:
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

    def _view_holders(self, vip: str, now: float, hosts: frozenset) -> None:
        changes = self.views[vip].holders
        if not changes or changes[-1][1] != hosts:
            changes.append((now, hosts))

    def _view_neigh(self, vip: str, now: float, mac: str | None) -> None:
        changes = self.views[vip].neigh
        if not changes or changes[-1][1] != mac:
            changes.append((now, mac))

    def _close(self, vip: str, end: float) -> None:
        kind, start, hosts, n = self._open.pop(vip)
        # One sample reads the hosts one after the other: a clean hand-over can show two
        # holders once. A real double lasts two samples or more.
        if kind == "double" and n < 2:
            return
        self.episodes.append(Episode(vip, kind, start, end, frozenset(hosts), n))
