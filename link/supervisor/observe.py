"""What the supervisor remembers for people: each VIP's recent events and its workers' numbers.

Events: every transition a worker reports (time, from, to, event, reason) and what the
supervisor itself sees happen to the worker (exited, respawned, FATAL); the last MAX_EVENTS per
VIP, newest last (`GET /ips/<id>/events`). Metrics: the latest numbers each worker sent,
plus those of its dead predecessors, so a VIP's counters keep growing across respawns
(`GET /metrics`, rendered by the API process).
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from link.supervisor.records import VipRecord, iso
from link.worker.metrics import add

WORKER = "worker"
SUPERVISOR = "supervisor"


def add_event(record: VipRecord, to: str, event: str, reason: str, *, frm: str | None = None,
              when: float | None = None, source: str = SUPERVISOR) -> None:
    record.events.append({
        "time": iso(time.time() if when is None else when),
        "from": record.status if frm is None else frm,
        "to": to,
        "event": event,
        "reason": reason,
        "source": source,
    })


def note_state(record: VipRecord, message: dict) -> None:
    """A worker's state report, before the record takes it: an event if the state changed."""
    note_metrics(record, message)
    state = message.get("state")
    frm = message.get("from", record.status)
    if not isinstance(state, str) or frm is None or frm == state:
        return  # the worker's first report, or only the holder or priority changed
    since = message.get("since")
    add_event(record, state, message.get("event") or "none", message.get("reason") or "", frm=frm,
              when=since if isinstance(since, (int, float)) else None, source=WORKER)


def note_metrics(record: VipRecord, message: dict) -> None:
    metrics = message.get("metrics")
    if isinstance(metrics, dict):
        record.metrics = metrics


def worker_gone(record: VipRecord) -> None:
    """Keep a dead worker's last numbers in the VIP's base: its successor starts from zero."""
    record.metrics_base = add(record.metrics_base, record.metrics)
    record.metrics = {}


def events_answer(record: VipRecord) -> list[dict[str, Any]]:
    return [dict(event) for event in record.events]


def metrics_answer(records: Iterable[VipRecord]) -> dict[str, Any]:
    """The `metrics` op's result: plain data, rendered in the Prometheus format by the API."""
    vips = []
    workers = 0
    for record in records:
        if record.pid is not None:
            workers += 1
        vips.append({
            "id": record.id,
            "ip": record.ip,
            "status": record.status,
            "since": record.since,
            "worker_state": record.worker_state,
            "restarts": record.restarts,
            "metrics": add(record.metrics_base, record.metrics),
        })
    return {"workers": workers, "vips": vips}
