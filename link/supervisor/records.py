"""What the supervisor knows of each VIP: its worker process and the state it last reported."""
from __future__ import annotations

import collections
import datetime
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from link.config import Config
from link.supervisor.worker_states import WorkerState
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import State

MAX_EVENTS = 100  # events kept per VIP (GET /ips/<id>/events)


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class VipRecord:
    spec: VipSpec
    since: float
    status: str = State.BOOTING.value  # the plain string, as the worker reports it
    holder: str | None = None
    pid: int | None = None
    conn: Connection | None = None
    # Changed only by link.supervisor.lifecycle.change (the table in worker_states.py).
    worker_state: WorkerState = WorkerState.STOPPED
    started_at: float = 0.0
    heard_at: float | None = None  # the worker's last message (the supervisor's clock), None before its first
    kill_at: float | None = None  # a HUNG worker's SIGKILL is due then
    respawn_at: float | None = None  # when BACKOFF or FATAL ends (the supervisor's clock)
    restarts: int = 0
    boot_failures: int = 0
    error: str | None = None
    boot_error: str | None = None
    delete_waiters: list[int] = field(default_factory=list)
    failover_waiters: list[int] = field(default_factory=list)
    candidate_waiters: list[int] = field(default_factory=list)
    priority: int | None = None  # the worker's effective priority, as it last reported
    wire: dict[str, Any] | None = None  # what the heartbeats say of the VIP (link.supervisor.wire_link.WireLink.document)
    binder_status: dict[str, Any] | None = None  # the binder's last outcome, as the worker last reported
    foreign_claim: dict[str, Any] | None = None  # another MAC claiming the VIP, as the worker last reported
    # What people look at (link.supervisor.observe): recent events, the worker's numbers.
    events: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=MAX_EVENTS))
    metrics: dict[str, Any] = field(default_factory=dict)  # the latest the running worker sent
    metrics_base: dict[str, Any] = field(default_factory=dict)  # the sum of its dead predecessors' last

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def ip(self) -> str:
        return self.spec.ip

    def to_api(self, config: Config, host_priority: int) -> dict[str, Any]:
        spec = self.spec
        if self.priority is not None:
            priority = self.priority
        else:
            priority = host_priority if spec.priority is None else spec.priority
        return {
            "id": self.id,
            "ip": self.ip,
            "status": self.status,
            "since": iso(self.since),
            "holder": self.holder,
            "checks": list(self.spec.checks),
            "healthcheck_interval": self.spec.healthcheck_interval,
            "fault_policy": spec.fault_policy or config.fault_policy,
            "priority": priority,
            "preempt": config.preempt if spec.preempt is None else spec.preempt,
            # A followed leader key (null: elected) and the value that means this host.
            "follow": spec.follow or None,
            "follow_value": (spec.follow_value or config.hostname) if spec.follow else None,
            "notify": list(spec.notify),  # the VIP's own; []: the agent's NOTIFY (link.worker.notify)
            "worker": {"pid": self.pid, "state": self.worker_state.value, "restarts": self.restarts, "error": self.error},
            # The binder and its settings, never the webhook's secret (VipSpec.public_binder).
            **spec.public_binder(),
            "wire": self.wire,
            "foreign_claim": dict(self.foreign_claim) if self.foreign_claim else None,
            "binder_status": dict(self.binder_status) if self.binder_status else
            {"ok": True, "action": None, "error": None, "attempts": 0, "since": None},
        }
