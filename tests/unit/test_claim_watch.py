"""The claim watch on a fake clock: detections, "seen now", the probe and re-announce schedules,
who fights (the lock holder only) and the end of a split brain."""
from __future__ import annotations

import pathlib

import pytest

from link.adapters.capture import Sighting
from link.worker.claim_watch import MAX_CLAIMANTS, TRANSITIONS, ClaimEvent, ClaimState, ClaimTiming, ClaimWatch, mermaid
from tests.unit.fake_clock import Clock

OURS, ROGUE, OTHER = "02:00:00:00:01:01", "02:00:00:00:0e:0e", "02:00:00:00:0f:0f"
T = ClaimTiming()


def watch(rightful: bool = True) -> tuple[ClaimWatch, Clock]:
    clock = Clock(100.0)
    w = ClaimWatch([OURS.upper()], clock)
    w.set_rightful(rightful)
    return w, clock


def seen(clock: Clock, mac: str = ROGUE, kind: str = "arp-announce") -> list[Sighting]:
    return [Sighting(mac, kind, clock.now)]


def reannounces(w: ClaimWatch, clock: Clock, until: float, step: float = 0.05) -> list[float]:
    """The times re-announces fall due while the clock runs to `until` (probes answered by
    nobody: the claim is left to the watch's own timers)."""
    found = []
    for _ in range(int((until - clock.now) / step) + 1):
        w.tick()
        if w.reannounce_due() is not None:
            found.append(round(clock.now - 100.0, 2))
        clock.now += step
    return found


def test_the_table_is_complete() -> None:
    assert set(TRANSITIONS) == {(s, e) for s in ClaimState for e in ClaimEvent}


def test_own_frames_are_no_claim() -> None:
    w, clock = watch()
    assert w.feed(seen(clock, OURS)) == [] and w.seen_now() is None and w.detections == 0


def test_a_foreign_claim_is_detected_once_and_seen_now() -> None:
    w, clock = watch()
    (change,) = w.feed(seen(clock))
    assert change.detected and change.claim.mac == ROGUE and w.detections == 1
    clock.now += 0.5
    assert w.feed(seen(clock, kind="arp-reply")) == []  # the same claim: no second detection
    claim = w.seen_now()
    assert claim is not None and (claim.first_seen, claim.last_seen, claim.kind) == (100.0, 100.5, "arp-reply")
    assert claim.sightings == 2 and w.detections == 1


def test_a_claim_goes_quiet_then_over_and_a_new_one_is_a_new_detection() -> None:
    w, clock = watch()
    w.feed(seen(clock))
    clock.now += T.quiet_after - 0.01
    assert w.tick() == []
    clock.now += 0.02
    (quiet,) = w.tick()
    assert (quiet.old, quiet.new) == (ClaimState.SEEN, ClaimState.QUIET) and w.seen_now() is not None
    clock.now += 0.1
    (back,) = w.feed(seen(clock, kind="arp-reply"))  # heard again: the same claim, no detection
    assert (back.old, back.new, back.detected) == (ClaimState.QUIET, ClaimState.SEEN, False) and w.detections == 1
    clock.now += T.expires_after
    changes = w.tick()
    assert [c.over for c in changes] == [True] and w.seen_now() is None
    assert [c.detected for c in w.feed(seen(clock))] == [True] and w.detections == 2


def test_two_claimants_are_two_claims_and_seen_now_is_the_latest() -> None:
    w, clock = watch()
    w.feed(seen(clock))
    clock.now += 0.2
    w.feed(seen(clock, OTHER))
    assert w.detections == 2 and w.seen_now().mac == OTHER  # type: ignore[union-attr]


def test_a_flood_of_forged_macs_is_followed_up_to_a_bound() -> None:
    w, clock = watch()
    w.feed([Sighting(f"02:00:00:00:{i // 256:02x}:{i % 256:02x}", "arp-reply", clock.now) for i in range(1000)])
    assert len(w.claims) == MAX_CLAIMANTS == w.detections


def probe_gaps(w: ClaimWatch, clock: Clock, seconds: float, step: float = 0.05) -> list[float]:
    """The gaps between the probes that fall due while the clock runs `seconds`."""
    times = []
    for _ in range(round(seconds / step)):
        w.tick()
        w.reannounce_due()
        if w.probe_due():
            times.append(clock.now)
        clock.now += step
    return [round(b - a, 2) for a, b in zip(times, times[1:])]


def test_probes_are_slow_while_nothing_is_seen_fast_while_a_claim_lives() -> None:
    w, clock = watch()
    # The clock moves in 50 ms steps from a random first phase: a probe falls due on the step
    # at or after its time, so a gap is its period give or take one step (float rounding).
    slow = probe_gaps(w, clock, 3 * T.probe_every + 0.1)
    assert len(slow) >= 2 and slow == pytest.approx([T.probe_every] * len(slow), abs=0.051), slow
    w.feed(seen(clock))
    assert w.next_due() == clock.now  # the re-announce, at once
    fast = probe_gaps(w, clock, T.expires_after - 0.1)
    assert fast and fast == pytest.approx([T.probe_fast] * len(fast), abs=0.051), fast
    clock.now += 0.2
    w.tick()
    assert w.seen_now() is None  # over: slow again
    again = probe_gaps(w, clock, 3 * T.probe_every + 0.1)[1:]
    assert again and again == pytest.approx([T.probe_every] * len(again), abs=0.051), again


def test_the_lock_holder_announces_at_once_after_the_locktime_then_every_period_while_seen() -> None:
    w, clock = watch()
    w.feed(seen(clock))
    due = []
    for _ in range(130):  # 6.5 s, the claimant answering every probe
        if w.probe_due():
            w.feed(seen(clock, kind="arp-reply"))
        w.tick()
        if w.reannounce_due() is not None:
            due.append(round(clock.now - 100.0, 2))
        clock.now += 0.05
    want = [0.0, T.follow_up, T.follow_up + T.reannounce_every, T.follow_up + 2 * T.reannounce_every]
    assert due == pytest.approx(want, abs=0.06)  # the clock moves in 50 ms steps


def test_a_holder_without_the_lock_reports_and_does_not_fight() -> None:
    w, clock = watch(rightful=False)
    assert [c.detected for c in w.feed(seen(clock))] == [True]
    assert reannounces(w, clock, 105.0) == []


def test_the_lock_won_while_a_claim_is_seen_starts_the_fight_and_lost_stops_it() -> None:
    w, clock = watch(rightful=False)
    w.feed(seen(clock))
    clock.now += 0.1
    w.feed(seen(clock))
    w.set_rightful(True)
    assert w.reannounce_due() is not None
    w.set_rightful(False)
    clock.now += T.follow_up
    assert w.reannounce_due() is None


def test_split_brain_over_the_other_goes_quiet_and_the_holder_announces_within_a_second() -> None:
    w, clock = watch()
    w.feed(seen(clock))
    w.reannounce_due()
    # The other holder answers every fast probe for 5 s, then steps down (answers no more).
    for _ in range(100):
        if w.probe_due():
            w.feed(seen(clock, kind="arp-reply"))
        w.tick()
        w.reannounce_due()
        clock.now += 0.05
    step_down = clock.now
    after = []
    for _ in range(60):
        w.tick()
        reason = w.reannounce_due()
        if reason is not None:
            after.append((round(clock.now - step_down, 2), reason))
        clock.now += 0.05
    quiet = [t for t, reason in after if "went quiet" in reason]
    assert len(quiet) == 2 and quiet[0] <= 1.0
    assert quiet[1] - quiet[0] == pytest.approx(T.follow_up, abs=0.06)  # and once after the locktime
    assert len(after) <= 3  # at most one periodic one before the quiet was noticed; none after


def test_a_caller_may_ask_for_an_announcement_rightful_or_not() -> None:
    w, clock = watch(rightful=False)
    w.reannounce_now("the peer h2 stepped down")
    assert w.reannounce_due() == "the peer h2 stepped down"
    clock.now += T.follow_up
    assert "again" in (w.reannounce_due() or "")
    clock.now += 10
    assert w.reannounce_due() is None


def test_the_architecture_document_shows_the_claims_table() -> None:
    doc = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    assert mermaid() in doc, "docs/ARCHITECTURE.md's claim diagram is stale: python -m link.worker.claim_watch"
    assert "QUIET --> SEEN: sighted" in mermaid() and "NONE --> QUIET" not in mermaid()
