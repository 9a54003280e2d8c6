"""What each host publishes about itself for a VIP, and who is the best candidate.

Each worker keeps `/link/candidates/<ip with / as _>/<hostname>` on its lease, a small JSON
object with its priority and state. The lock and `/link/ips/...` keys stay exactly as LinK v2
writes them; this key is ours alone (a LinK v2 agent neither writes nor reads it, and counts
as a candidate of the default priority when it holds the lock).

Anyone who can write to etcd can put anything under the prefix, so a value is checked before it
counts: `decode` raises `BadCandidate` (never anything else) unless the value is at most
MAX_VALUE_LENGTH characters of UTF-8 JSON, an object whose `priority` is an integer from 0 to
255 and whose `state` is one of the worker states, under a key whose last part is a plain host
name (other members of the object are allowed: a newer version may add some). **A
malformed candidate is ignored**: it is not a rival, so it can neither make a holder hand over
nor keep a free lock waiting (the caller logs it once). The same goes for a candidate key that
is not on a lease (the election checks that): every worker writes its key on its lease, so a
key without one was written by something else, and would outlive any host.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from link.vocabulary.vip import ETCD_DIRECTORY, storable
from link.etcd.values import plain_name
from link.vocabulary.vip_states import State

DEFAULT_PRIORITY = 10
MIN_PRIORITY, MAX_PRIORITY = 0, 255  # PRIORITY's range
MAX_VALUE_LENGTH = 1024  # ours are about 40 characters; a longer value is not parsed at all
STATES = frozenset(state.value for state in State)


class BadCandidate(ValueError):
    """A candidate key or value that does not count; the message says why."""


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
        return self.state != State.FAILING

    def to_api(self) -> dict[str, Any]:
        return {"host": self.host, "priority": self.priority, "state": self.state}


def encode(priority: int, state: str) -> str:
    return json.dumps({"priority": priority, "state": state}, separators=(",", ":"))


def decode(host: str, value: str | bytes) -> Candidate:
    """The candidate `host` published, or BadCandidate (the module docstring says what counts)."""
    if not plain_name(host):
        raise BadCandidate("the key does not end with a host name")
    if len(value) > MAX_VALUE_LENGTH:
        raise BadCandidate(f"longer than {MAX_VALUE_LENGTH} characters")
    try:
        text = value.decode() if isinstance(value, bytes) else value
        # RecursionError: deeply nested arrays; ValueError covers invalid JSON and UTF-8.
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadCandidate("not JSON") from None
    if not isinstance(data, dict):
        raise BadCandidate("not a JSON object")
    priority, state = data.get("priority"), data.get("state")
    # type() rather than isinstance(): true and false are no priorities; 1e400 is a float.
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise BadCandidate(f"priority is not an integer from {MIN_PRIORITY} to {MAX_PRIORITY}")
    if not isinstance(state, str) or state not in STATES:
        raise BadCandidate(f"state is not one of {', '.join(sorted(STATES))}")
    return Candidate(host, priority, state)


def better_than(candidates: list[Candidate], hostname: str, priority: int) -> list[Candidate]:
    """Healthy candidates other than us with a strictly better (lower) priority, best first."""
    rivals = [c for c in candidates if c.host != hostname and c.healthy and c.priority < priority]
    return sorted(rivals, key=lambda c: (c.priority, c.host))
