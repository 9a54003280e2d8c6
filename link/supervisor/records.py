"""What the supervisor knows of each VIP: its worker process and the state it last reported."""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

# The supervisor's view of a worker process (Supervisor's RUNNING/BACKOFF/FATAL).
RUNNING = "RUNNING"
BACKOFF = "BACKOFF"
FATAL = "FATAL"
STOPPING = "STOPPING"


def iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class VipRecord:
    id: str
    ip: str
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

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "ip": self.ip,
            "status": self.status,
            "since": iso(self.since),
            "holder": self.holder,
            "worker": {"pid": self.pid, "state": self.worker_state, "restarts": self.restarts, "error": self.error},
        }
