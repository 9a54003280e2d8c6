"""Waiting for conditions, never for a fixed time."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time; the message says which and the last value seen."""


class GiveUp(Exception):
    """Raised by a predicate when waiting longer is pointless (the process it waits for died)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Call `predicate` until it returns something truthy and return that value.

    Bounded both in time (`timeout` seconds, measured with the monotonic clock) and in count
    (at most timeout/interval + 2 calls). An exception raised by the predicate counts as a
    false answer (the last one is reported). Raise WaitTimeout when time is up.
    """
    deadline = time.monotonic() + timeout
    max_calls = int(timeout / max(interval, 1e-3)) + 2
    last: object = None
    for _ in range(max_calls):
        try:
            value = predicate()
        except GiveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing probe is a "not yet"
            value, last = None, exc  # type: ignore[assignment]
        else:
            last = value
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what or predicate!r}; last: {last!r}")


def timed_wait(predicate: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "",
               start: float | None = None) -> tuple[T, float]:
    """wait_until, also returning how long it took (seconds).

    With `start` (a time.monotonic() taken just before the action), both the limit and the
    time returned count from that moment, so the action's own duration is inside the bound.
    """
    start = time.monotonic() if start is None else start
    value = wait_until(predicate, max(0.0, start + timeout - time.monotonic()), interval, what)
    return value, time.monotonic() - start
