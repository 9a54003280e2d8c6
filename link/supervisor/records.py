"""What the supervisor knows of each VIP: its worker process and the state it last reported."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from link.config import Config
from link.vip import VipSpec

# The supervisor's view of a worker process (Supervisor's RUNNING/BACKOFF/FATAL).
RUNNING = "RUNNING"
BACKOFF = "BACKOFF"
FATAL = "FATAL"
STOPPING = "STOPPING"


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class VipRecord:
    spec: VipSpec
    since: float
    status: str = "BOOTING"
    holder: str | None = None
    pid: int | None = None
    conn: Connection | None = None
    worker_state: str = BACKOFF
    started_at: float = 0.0
    respawn_at: float | None = None
    restarts: int = 0
    boot_failures: int = 0
    error: str | None = None
    boot_error: str | None = None
    delete_waiters: list[int] = field(default_factory=list)
    failover_waiters: list[int] = field(default_factory=list)
    candidate_waiters: list[int] = field(default_factory=list)
    priority: int | None = None  # the worker's effective priority, as it last reported

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def ip(self) -> str:
        return self.spec.ip

    def to_api(self, config: Config, host_priority: int) -> dict:
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
            "worker": {"pid": self.pid, "state": self.worker_state, "restarts": self.restarts, "error": self.error},
        }
