"""A binder action that keeps failing is retried for as long as it fails.

mypy (strict) found it: backoff_delay doubled an int, `2 ** (failures - 1)`, and multiplying
it by a float raises OverflowError from the 1025th failed attempt on (some 8 hours at the
30 s cap): the runner's thread died and the VIP's binder was never retried again.
"""
from __future__ import annotations

import threading

from link.worker.binders.runner import Action, ActionFailed, ActionRunner, backoff_delay


def no_jitter(low: float, high: float) -> float:
    return 1.0


def test_backoff_doubles_from_base_then_stays_at_the_cap_however_many_failures() -> None:
    assert [backoff_delay(n, 0.5, 30.0, no_jitter) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    for failures in (7, 1024, 1025, 1100, 10 ** 6):
        assert backoff_delay(failures, 0.5, 30.0, no_jitter) == 30.0, failures


def test_the_runner_keeps_retrying_past_a_thousand_failed_attempts() -> None:
    failing = 1100  # more than a float's 2 ** 1024 allows doublings
    done = threading.Event()

    def perform(action: Action, attempt: int) -> None:
        if attempt <= failing:
            raise ActionFailed(f"the web server is down (attempt {attempt})")
        done.set()

    # No delay between attempts (base and cap 0): the test runs the attempts back to back.
    runner = ActionRunner(perform, base=0.0, cap=0.0, rng=no_jitter)
    try:
        runner.submit(Action("activate", "ACTIVATED", "test"))
        assert done.wait(30), f"the runner stopped retrying: {runner.status()}"
        status = runner.status()
        assert status["ok"] and status["attempts"] == failing + 1, status
    finally:
        assert runner.close(5.0)
