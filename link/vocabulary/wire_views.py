"""What the supervisor tells a worker of its VIP on the wire, typed (the `wire_view` command's
items), and the names of the events the wire's decisions make on a VIP (`link-client events`).

A leaf module: the supervisor, the workers and link.wire share these words.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class HeardPeer:
    """A live peer as the heartbeats describe it for one VIP."""

    host: str
    priority: int  # 0..255, lowest wins
    lock: bool = False  # it holds the VIP's etcd lock

    def to_json(self) -> dict[str, object]:
        return {"host": self.host, "priority": self.priority, "lock": self.lock}


class WireEvent(str, enum.Enum):
    """The event a VIP gets when the wire's decision for it changes (`source` "wire")."""

    ETCD = "wire_etcd"  # etcd answers: the election decides again
    KEEP = "wire_keep"
    YIELD_TO_LOCK = "wire_yield_to_lock"
    YIELD_TO_RANK = "wire_yield_to_rank"
    TAKE = "wire_take"
    WAIT = "wire_wait"
    IDLE = "wire_idle"

    @classmethod
    def of(cls, decision: str | None) -> "WireEvent":
        """The event of a decision as a worker reports it (None: etcd decides)."""
        return cls.ETCD if decision is None else cls(f"wire_{decision}")
