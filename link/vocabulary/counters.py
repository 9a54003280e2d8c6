"""Adding up the plain-number snapshots workers send (`link.worker.metrics`), a leaf module:
the supervisor sums them without importing the worker."""
from __future__ import annotations

from typing import Any, Mapping


def add(base: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Two snapshots summed key by key (numbers added, dicts merged the same way).

    The supervisor folds a dead worker's last numbers into the VIP's base, so the counters of a
    VIP keep growing across respawns instead of falling back to zero.
    """
    out: dict[str, Any] = dict(base)
    for key, value in more.items():
        mine = out.get(key)
        if isinstance(value, Mapping):
            out[key] = add(mine if isinstance(mine, Mapping) else {}, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = (mine if isinstance(mine, (int, float)) and not isinstance(mine, bool) else 0) + value
        else:
            out[key] = value
    return out
