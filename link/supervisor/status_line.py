"""The one line `systemctl status link` shows (systemd's STATUS=): the VIPs by state, workers
in trouble, and whether etcd answers.

The supervisor has no etcd client: it judges etcd from the numbers each worker sends every
few seconds (link.worker.metrics: etcd calls and their errors). A worker whose calls since
its previous report all failed as "unavailable" cannot reach etcd; one whose calls succeeded
can. etcd is "unreachable" when every worker that made calls cannot reach it.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from link.supervisor.records import VipRecord
from link.supervisor.worker_states import WorkerState
from link.vocabulary.vip_states import SUMMARY_ORDER

DURATION_STEP = 10  # seconds: the outage's length is shown in these steps, so the line
#                     (and the datagram to systemd) changes every 10 s, not every second
STATE_ORDER = tuple(state.value for state in SUMMARY_ORDER)
# worker process states worth a word in the line, by their plain names
TROUBLE = tuple(state.value for state in (WorkerState.FATAL, WorkerState.HUNG, WorkerState.BACKOFF))


def worker_state(record: VipRecord) -> str:
    """The record's worker state as its plain name (an Enum member or a string)."""
    return str(getattr(record.worker_state, "value", record.worker_state))


def _totals(metrics: Mapping[str, Any]) -> tuple[int, int]:
    """(calls that succeeded, calls that failed as unavailable) from a worker's etcd numbers."""
    etcd = metrics.get("etcd")
    if not isinstance(etcd, Mapping):
        return 0, 0
    requests, errors = etcd.get("requests"), etcd.get("errors")
    if not isinstance(requests, Mapping):
        requests = {}
    if not isinstance(errors, Mapping):
        errors = {}
    calls = sum(v for v in requests.values() if isinstance(v, int))
    failed = unavailable = 0
    for kinds in errors.values():
        if isinstance(kinds, Mapping):
            for kind, count in kinds.items():
                if isinstance(count, int):
                    failed += count
                    unavailable += count if kind == "unavailable" else 0
    return calls - failed, unavailable


@dataclass
class _Seen:
    pid: int | None
    ok: int
    unavailable: int
    down_since: float | None = None


class EtcdWatch:
    """Per VIP, whether its worker reached etcd between its last two reports."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def note(self, vips: Iterable[VipRecord], now: float) -> None:
        current = {}
        for record in vips:
            ok, unavailable = _totals(record.metrics)
            seen = self._seen.get(record.id)
            if seen is None or seen.pid != record.pid:
                # A new worker counts from zero: its first numbers are the baseline.
                current[record.id] = _Seen(record.pid, ok, unavailable)
                continue
            if ok > seen.ok:
                seen.down_since = None
            elif unavailable > seen.unavailable and seen.down_since is None:
                seen.down_since = now
            seen.ok, seen.unavailable = ok, unavailable
            current[record.id] = seen
        self._seen = current

    def verdict(self, now: float) -> str:
        """'etcd ok', 'etcd unreachable for 40 s' or 'etcd unreachable for 2 of 5 VIPs'."""
        down = [s.down_since for s in self._seen.values() if s.down_since is not None]
        if not down:
            return "etcd ok"
        if len(down) < len(self._seen):
            return f"etcd unreachable for {len(down)} of {len(self._seen)} VIPs"
        seconds = int(now - min(down)) // DURATION_STEP * DURATION_STEP
        return f"etcd unreachable for {seconds} s" if seconds else "etcd unreachable"


def status_line(vips: Iterable[VipRecord], etcd: str, fault_policy: str) -> str:
    """E.g. '5 VIPs: 2 ACTIVATED, 3 STANDBY; etcd ok', '1 VIP: 1 STANDBY; 1 worker FATAL;
    etcd unreachable for 40 s: policy activate'."""
    vips = list(vips)
    if not vips:
        return "no VIPs"
    states = collections.Counter(r.status for r in vips)
    order = [s for s in STATE_ORDER if s in states] + sorted(s for s in states if s not in STATE_ORDER)
    parts = [f"{len(vips)} VIP{'s' if len(vips) != 1 else ''}: " + ", ".join(f"{states[s]} {s}" for s in order)]
    troubled = collections.Counter(worker_state(r) for r in vips)
    for state in TROUBLE:
        if troubled[state]:
            parts.append(f"{troubled[state]} worker{'s' if troubled[state] != 1 else ''} {state}")
    parts.append(etcd if etcd == "etcd ok" else f"{etcd}: policy {fault_policy}")
    return "; ".join(parts)
