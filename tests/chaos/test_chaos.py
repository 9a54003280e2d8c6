"""Chaos in the lab: random faults for --chaos-seconds (seeded), link's promises checked all
along by an observer that samples every host every few ms (tests/chaos/engine.py says what
is injected and what is judged, with which bounds)."""
from __future__ import annotations

import json

import pytest

from tests.chaos.engine import Chaos

pytestmark = pytest.mark.lab


def test_promises_hold_under_random_faults(lab, scripts, chaos_settings, chaos_policy, chaos_report):
    seconds, seed = chaos_settings
    print(f"chaos: seed {seed}, {seconds:g} s (reproduce with --chaos-seed {seed}); journal {lab.workdir / 'chaos.log'}")
    chaos = Chaos(lab, seed, scripts, fault_policy=chaos_policy)
    try:
        chaos.setup()
        chaos.run(seconds)
    finally:
        summary = chaos.finish() if chaos.observer is not None else {"seed": seed, "setup": "failed"}
        print("chaos summary: " + json.dumps(summary, indent=1, default=str))
        chaos_report(summary)  # printed at the end of pytest's output, also on success
        chaos.cluster.stop()
    assert not chaos.violations, (
        f"{len(chaos.violations)} violation(s) with seed {seed} (journal: {lab.workdir / 'chaos.log'}):\n"
        + "\n".join(chaos.violations[:30]))
