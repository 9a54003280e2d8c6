"""A chaos run's summary: what was injected, what the observer saw, the longest episodes
against their bounds, the API calls (printed at the end of pytest's output by conftest.py)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

from .judge import (AFTER_ETCD, CONVERGE, CUT_YIELD, DOUBLE_BOUND, GAP_BOUND, NEIGH_BOUND, OUTAGE_DOUBLE,
                    double_excused, gap_blame, longest_wrong_entry)

if TYPE_CHECKING:
    from .engine import Chaos


def summarize(chaos: "Chaos") -> dict[str, Any]:
    obs, timeline = chaos.observer, chaos.timeline
    eps = obs.episodes if obs else []
    gaps = [e for e in eps if e.kind == "gap"]
    doubles = [e for e in eps if e.kind == "double"]
    # While etcd was reachable from every holder: neither out nor cut, nor converging after.
    reachable = [e for e in doubles if not double_excused(e, timeline)]
    hosts = [h.name for h in chaos.lab.hosts]
    macs = {h.name: h.mac for h in chaos.lab.hosts}
    end = (obs.stopped_at if obs else None) or time.monotonic()
    valid = [c for c in chaos.api_calls if c.valid]
    invalid = [c for c in chaos.api_calls if not c.valid]
    return {
        "seed": chaos.seed,
        "seconds": round(time.monotonic() - chaos.t0, 1),
        "faults": {k: v for k, v in chaos.faults.items() if v},
        "observer": {"samples": obs.samples if obs else 0, "longest_step_s": round(obs.max_step, 3) if obs else None},
        "gaps": len(gaps),
        "longest_gap_s": round(max((e.length for e in gaps), default=0.0), 3),
        "longest_gap_with_a_candidate_s": round(max((gap_blame(e, timeline, hosts) for e in gaps), default=0.0), 3),
        "doubles": len(doubles),
        "longest_double_s": round(max((e.length for e in doubles), default=0.0), 3),
        "longest_double_while_etcd_reachable_s": round(max((e.length for e in reachable), default=0.0), 3),
        "longest_client_entry_elsewhere_s": round(max((longest_wrong_entry(v, macs, end)
                                                       for v in (obs.views.values() if obs else [])), default=0.0), 3),
        "fault_policies": timeline.policies,
        "bounds_s": {"gap": GAP_BOUND, "double": DOUBLE_BOUND, "converge_after_etcd": CONVERGE,
                     "client_entry": NEIGH_BOUND,
                     "arbitrate": {"outage_double": OUTAGE_DOUBLE, "after_etcd": AFTER_ETCD, "cut_yield": CUT_YIELD}},
        "api_calls": {"valid": len(valid), "invalid": len(invalid),
                      "statuses": _count(f"{'valid' if c.valid else 'invalid'} {c.status}" for c in chaos.api_calls)},
        "violations": len(chaos.violations),
    }


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return dict(sorted(out.items()))
