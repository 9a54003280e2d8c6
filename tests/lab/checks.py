"""Small pieces the integration tests and the demo share."""
from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

from .addrdump import AddressDump
from .lab import IFACE, Lab


def ip_list(body: Any) -> list[dict]:
    """The IP objects of a `GET /ips` answer."""
    if isinstance(body, dict) and isinstance(body.get("ips"), list):
        return body["ips"]
    if isinstance(body, list):
        return body
    raise AssertionError(f"GET /ips answered {body!r}, not a list of IP objects")


class BoundWatch:
    """Samples, in a thread, which hosts have a VIP bound (bounded: stops after `limit` s),
    through a raw netlink socket per host (tests/lab/addrdump.py: a sample takes ~0.1 ms).

    One sample looks at the hosts one after the other (well under a millisecond in all), so a
    clean hand-over (unbind, then the other host binds) can still show both hosts in one
    sample. A real double holder lasts: `overlaps()` reports only two hosts or more seen in at
    least two samples in a row.
    """

    def __init__(self, lab: Lab, vip: str, interval: float = 0.01, limit: float = 60.0) -> None:
        self.lab, self.vip, self.interval, self.limit = lab, vip, interval, limit
        self.samples: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bound-watch-{vip}", daemon=True)

    def _run(self) -> None:
        want = ipaddress.ip_interface(self.vip).ip.packed
        dumps = []
        try:
            dumps = [(h.name, AddressDump(h.ns, IFACE)) for h in self.lab.hosts]
            deadline = time.monotonic() + self.limit
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    bound = tuple(name for name, dump in dumps if want in dump.packed())
                except OSError:  # a namespace going away at the end
                    break
                self.samples.append((time.monotonic(), bound))
                self._stop.wait(self.interval)
        finally:
            for _, dump in dumps:
                dump.close()

    def overlaps(self) -> list[tuple[float, float, tuple[str, ...]]]:
        """(first seen, last seen, hosts) of each run of 2+ consecutive samples with 2+ hosts."""
        runs, current = [], []
        for t, bound in self.samples + [(0.0, ())]:
            if len(bound) >= 2:
                current.append((t, bound))
                continue
            if len(current) >= 2:
                runs.append((current[0][0], current[-1][0], tuple(sorted({h for _, b in current for h in b}))))
            current = []
        return runs

    def history(self) -> str:
        """The changes, with times relative to the first sample."""
        t0 = self.samples[0][0] if self.samples else 0.0
        out, last = [], None
        for t, bound in self.samples:
            if bound != last:
                out.append(f"+{t - t0:.3f}s {list(bound)}")
                last = bound
        return ", ".join(out)

    def __enter__(self) -> "BoundWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
