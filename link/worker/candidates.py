"""What each host publishes about itself for a VIP, and who is the best candidate.

Each worker keeps `/link/candidates/<ip with / as _>/<hostname>` on its lease, a small JSON
object with its priority and state. The lock and `/link/ips/...` keys stay exactly as LinK v2
writes them; this key is ours alone (a LinK v2 agent neither writes nor reads it, and counts
as a candidate of the default priority when it holds the lock).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from link.vip import ETCD_DIRECTORY, storable

DEFAULT_PRIORITY = 10


def candidates_prefix(vip: str) -> str:
    return f"{ETCD_DIRECTORY}/candidates/{storable(vip)}/"


def candidate_info_key(vip: str, hostname: str) -> str:
    return candidates_prefix(vip) + hostname


@dataclass(frozen=True)
class Candidate:
    host: str
    priority: int
    state: str

    @property
    def healthy(self) -> bool:
        return self.state != "FAILING"

    def to_api(self) -> dict:
        return {"host": self.host, "priority": self.priority, "state": self.state}


def encode(priority: int, state: str) -> str:
    return json.dumps({"priority": priority, "state": state}, separators=(",", ":"))


def decode(host: str, value: str) -> Candidate:
    """A malformed value (another tool, a newer version) counts as a default candidate."""
    try:
        data = json.loads(value)
        priority = int(data.get("priority", DEFAULT_PRIORITY))
        state = str(data.get("state", "STANDBY"))
    except (ValueError, TypeError, AttributeError):
        priority, state = DEFAULT_PRIORITY, "STANDBY"
    return Candidate(host, priority, state)


def better_than(candidates: list[Candidate], hostname: str, priority: int) -> list[Candidate]:
    """Healthy candidates other than us with a strictly better (lower) priority, best first."""
    rivals = [c for c in candidates if c.host != hostname and c.healthy and c.priority < priority]
    return sorted(rivals, key=lambda c: (c.priority, c.host))
