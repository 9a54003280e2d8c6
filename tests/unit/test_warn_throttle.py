"""A long etcd outage logs one warning per 30 s per VIP, not one per cycle."""
from __future__ import annotations

from link.warn_throttle import WarningThrottle
from tests.unit.fake_clock import Clock


def test_first_warning_of_a_streak_is_logged_then_one_per_period_with_the_count_held_back() -> None:
    clock = Clock()
    throttle = WarningThrottle(every=30.0, clock=clock)
    assert throttle.trouble() == (True, 0)
    decisions = []
    for _ in range(59):  # 59 more cycles half a second apart: 29.5 s
        clock.now += 0.5
        decisions.append(throttle.trouble())
    assert all(d == (False, 0) for d in decisions)
    clock.now += 0.5  # 30 s after the first
    assert throttle.trouble() == (True, 59)
    clock.now += 0.5
    assert throttle.trouble() == (False, 0)


def test_the_end_of_a_streak_reports_what_was_held_back_and_the_next_trouble_is_logged_at_once() -> None:
    clock = Clock()
    throttle = WarningThrottle(every=30.0, clock=clock)
    assert throttle.clear() is None  # no streak: nothing to say
    throttle.trouble()
    for _ in range(3):
        clock.now += 1
        throttle.trouble()
    assert throttle.clear() == 3
    assert throttle.clear() is None
    clock.now += 1  # a new streak one second later is news: logged at once
    assert throttle.trouble() == (True, 0)
