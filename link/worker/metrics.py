"""What a worker counts for the metrics, kept in plain numbers and sent to the supervisor.

No metrics library in the worker: the counters are a few dicts, copied into a small dict
that rides along with each state report and, at most every PUSH_INTERVAL seconds, in a
metrics report (`link.vocabulary.protocol.MetricsReport`). The supervisor keeps the latest per VIP (and
sums them with `link.vocabulary.counters.add`); the API process renders them (`link.api.metrics`).
Counting is a dict update, so the main loop stays cheap.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

from link.checks import CheckResult

# Seconds between two metrics messages to the supervisor. Every message wakes the supervisor
# (hundreds of workers on a host); state reports carry fresh numbers in between.
PUSH_INTERVAL = 5.0


class WorkerMetrics:
    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = PUSH_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self.transitions: dict[str, int] = {}
        self.health_results: dict[str, int] = {"pass": 0, "fail": 0}
        self.health_seconds = 0.0
        self.health_count = 0
        self.notify_runs: dict[str, int] = {}  # by outcome (link.vocabulary.notify_words.NotifyOutcome)
        self._last_push = clock()

    def transition(self, event: str | None) -> None:
        key = event or "none"
        self.transitions[key] = self.transitions.get(key, 0) + 1

    def notify_run(self, outcome: str) -> None:
        self.notify_runs[outcome] = self.notify_runs.get(outcome, 0) + 1

    def health_round(self, results: Sequence[CheckResult]) -> None:
        for result in results:
            outcome = "pass" if result.ok else "fail"
            self.health_results[outcome] += 1
            self.health_seconds += result.seconds
            self.health_count += 1

    def due(self) -> bool:
        """Whether a metrics message should go now (and, if so, counts it as sent)."""
        now = self.clock()
        if now - self._last_push < self.interval:
            return False
        self._last_push = now
        return True

    def snapshot(self, etcd: Mapping[str, Any] | None, packets: int,
                 election: Mapping[str, int] | None = None, claims: Mapping[str, int] | None = None) -> dict[str, Any]:
        """The numbers as one plain dict (what goes over the pipe); `election` is what the
        election counts (Election.counters), `claims` the claim guard (ClaimGuard.counters)."""
        self._last_push = self.clock()
        return {
            "transitions": dict(self.transitions),
            "announce_packets": packets,
            "health": {"results": dict(self.health_results), "seconds": self.health_seconds, "count": self.health_count},
            "etcd": dict(etcd or {}),
            "election": dict(election or {}),
            "claims": dict(claims or {}),
            "notify": dict(self.notify_runs),
        }
