"""Runs a VIP's health checks on a thread of the worker and turns results into events.

Checks run off the main loop so a slow probe never delays a lease refresh. The thread only
produces results; the main loop decides (`HealthJudge`) when they become
`health_check_fail` / `health_check_success`.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

from link.checks import CheckResult, describe, run_check
from link.scripts import ProgramPolicy, RefusalLog
from link.vocabulary.vip_states import Event

logger = logging.getLogger(__name__)


class HealthMonitor:
    def __init__(self, checks: list[dict[str, Any]], interval: float, timeout: float, wake: Callable[[], None],
                 programs: ProgramPolicy, label: str = "") -> None:
        self._checks = list(checks)
        self._interval = interval
        self._timeout = timeout
        self._wake = wake
        self._programs = programs  # EXEC checks: checked again before every run
        self._refusals = RefusalLog(f"{label}: " if label else "")
        self._lock = threading.Lock()
        self._results: collections.deque[list[CheckResult]] = collections.deque(maxlen=16)
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)
        self._started = False

    def start(self) -> None:
        """Start checking; a VIP without checks gets no thread until it is given some."""
        self._started = True
        self._start_thread_if_needed()

    def _start_thread_if_needed(self) -> None:
        if self._started and self._checks and self._thread.ident is None and not self._stop.is_set():
            self._thread.start()

    def replace(self, checks: list[dict[str, Any]], interval: float) -> None:
        """New checks take effect at once, without touching the VIP."""
        with self._lock:
            self._checks, self._interval = list(checks), interval
            self._results.clear()
            self._refusals.forget()
        self._changed.set()
        self._start_thread_if_needed()

    def _loop(self) -> None:
        # Bounded by the worker's life: ends when stop() is called.
        while not self._stop.is_set():
            with self._lock:
                checks, interval = list(self._checks), self._interval
            if checks:
                results = [self._run(check) for check in checks]
                with self._lock:
                    if checks == self._checks:  # drop results of checks replaced meanwhile
                        self._results.append(results)
                self._wake()
            self._changed.wait(interval)
            self._changed.clear()

    def _run(self, check: dict[str, Any]) -> CheckResult:
        result = run_check(check, self._timeout, self._programs)
        # A refused program fails the check every round; its reason is logged once per change.
        if result.refused:
            self._refusals.refused(describe(check), result.refused)
        elif check["type"] == "EXEC":
            self._refusals.accepted(describe(check))
        return result

    def take_results(self) -> list[list[CheckResult]]:
        with self._lock:
            results = list(self._results)
            self._results.clear()
        return results

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=self._timeout + 1)


class HealthJudge:
    """FAIL_COUNT_BEFORE_FAILOVER failed rounds in a row → fail; one good round → success."""

    def __init__(self, fail_count: int) -> None:
        self.fail_count = fail_count
        self.failures = 0
        self.failing = False
        self._said = ""  # the failure last reported while failing

    def reset(self) -> None:
        self.failures, self.failing, self._said = 0, False, ""

    def judge(self, results: list[CheckResult]) -> tuple[Event | None, str]:
        """The event the round calls for, and a line for the log ("" when there is nothing new:
        a check that keeps failing the same way while FAILING is said once, not every round)."""
        bad = [r for r in results if not r.ok]
        if not bad:
            self.failures, self._said = 0, ""
            if self.failing:
                self.failing = False
                return Event.HEALTH_CHECK_SUCCESS, "health checks pass again"
            return None, ""
        self.failures += 1
        if self.failures >= self.fail_count and not self.failing:
            self.failing, self._said = True, bad[0].detail
            return Event.HEALTH_CHECK_FAIL, f"health check {bad[0].detail}; failed {self.failures} times in a row"
        if self.failing:
            if bad[0].detail == self._said:
                return None, ""
            self._said = bad[0].detail
        return None, f"health check {bad[0].detail} ({self.failures}/{self.fail_count})"
