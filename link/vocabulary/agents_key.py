"""The key each agent publishes about itself in etcd: `/link/agents/<hostname>` (a leaf module).

The API process writes it (link.api.agents_directory: the host's INTERFACE addresses, its interface's
MAC, the heartbeat's endpoint); the API reads the peers' addresses from it, the workers the
peers' MACs, to name the host behind a MAC that claims a VIP (link.worker.claim_guard).
The prefix is link's own: no LinK version reads or writes under it (see link.api.agents_directory).
"""
from __future__ import annotations

import json
import re

from link.vocabulary.vip import ETCD_DIRECTORY

AGENTS_PREFIX = f"{ETCD_DIRECTORY}/agents/"
MAC_FIELD = "mac"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def agent_mac(value: str) -> str | None:
    """The interface MAC a peer's value names (lower case), or None (absent, malformed: an
    older agent, or someone else's junk; never raises)."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return None
    mac = data.get(MAC_FIELD) if isinstance(data, dict) else None
    if not isinstance(mac, str) or not _MAC.match(mac.lower()):
        return None
    return mac.lower()
