"""What the supervisor remembers for people: each VIP's recent events and its workers' numbers.

Events: every transition a worker reports (time, from, to, event, reason) and what the
supervisor itself sees happen to the worker (exited, respawned, FATAL); the last MAX_EVENTS per
VIP, newest last (`GET /ips/<id>/events`). Metrics: the latest numbers each worker sent,
plus those of its dead predecessors, so a VIP's counters keep growing across respawns
(`GET /metrics`, rendered by the API process). A worker's reports (link.vocabulary.protocol) land here.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from link.vocabulary.counters import add
from link.vocabulary.protocol import BinderReport, BootFailed, ClaimReport, MetricsReport, NotifyReport, StateReport
from link.supervisor.records import VipRecord, iso

logger = logging.getLogger(__name__)

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


def state_report(report: StateReport, record: VipRecord) -> None:
    """A worker's state report: an event if the state changed, then the record takes it."""
    note_metrics(record, report.metrics)
    if report.previous is not None and report.previous != report.state:
        # Not the worker's first report, and more than the holder or priority changed.
        add_event(record, report.state, report.event or "none", report.reason, frm=report.previous, when=report.since,
                  source=WORKER)
    if report.state != record.status:
        logger.info("%s is %s (%s)", record.ip, report.state, report.reason or "worker started")
    record.status, record.since, record.holder = report.state, report.since, report.holder
    record.priority = report.priority
    record.error = None
    binder_report(report, record)


def binder_report(report: StateReport | BinderReport, record: VipRecord) -> None:
    if report.binder_status is not None:
        record.binder_status = report.binder_status


def metrics_report(report: MetricsReport, record: VipRecord) -> None:
    note_metrics(record, report.metrics)


def claim_report(report: ClaimReport, record: VipRecord) -> None:
    """Another host's claim on the VIP seen or over (link.worker.claim_guard): the VIP's
    `foreign_claim` field, and an event (the state does not change)."""
    note_metrics(record, report.metrics)
    claim = report.claim
    record.foreign_claim = None if claim is None else {
        "mac": claim.get("mac"), "host": claim.get("host"), "kind": claim.get("kind"),
        "since": iso(claim["since"]) if isinstance(claim.get("since"), (int, float)) else None,
    }
    add_event(record, record.status, report.event, report.reason, source=WORKER)


def notify_report(report: NotifyReport, record: VipRecord) -> None:
    """A notify program that did not do its job (link.worker.notify): an event, the state stays."""
    note_metrics(record, report.metrics)
    add_event(record, record.status, report.event, report.reason, source=WORKER)


def boot_failed(report: BootFailed, record: VipRecord) -> None:
    """Said before the worker exits: the reason its exit gives."""
    record.boot_error = report.error or "boot failed"


def note_metrics(record: VipRecord, metrics: dict[str, Any] | None) -> None:
    if metrics is not None:
        record.metrics = metrics


def worker_gone(record: VipRecord) -> None:
    """Keep a dead worker's last numbers in the VIP's base: its successor starts from zero."""
    record.metrics_base = add(record.metrics_base, record.metrics)
    record.metrics = {}
    record.foreign_claim = None  # seen by that worker only: its successor looks again


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
            "worker_state": record.worker_state.value,
            "restarts": record.restarts,
            "metrics": add(record.metrics_base, record.metrics),
            "foreign_claim": 1 if record.foreign_claim else 0,
        })
    return {"workers": workers, "vips": vips}
