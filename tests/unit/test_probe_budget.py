"""The host's probe budget (link.probe_budget) on a fake clock: 1000 VIPs held on one host send
CLAIM_PROBE_RATE probes per second between them, spread, not 500; a VIP with a claim still
probes fast; the count the supervisor writes reaches a forked worker."""
from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator

import pytest

from link import probe_budget
from link.config import ConfigError, load
from link.adapters.capture import Sighting
from link.worker.claim_watch import ClaimTiming, ClaimWatch
from tests.unit.fake_clock import Clock

T = ClaimTiming()
OURS, ROGUE = "02:00:00:00:01:01", "02:00:00:00:0e:0e"


@pytest.fixture(autouse=True)
def count_restored() -> Iterator[None]:
    before = probe_budget.vips()
    yield
    probe_budget.set_vips(before)


def test_the_period_is_two_seconds_until_the_budget_asks_for_longer() -> None:
    assert probe_budget.probe_period(T.probe_every, 20.0, lambda: 1) == T.probe_every
    assert probe_budget.probe_period(T.probe_every, 20.0, lambda: 40) == T.probe_every
    assert probe_budget.probe_period(T.probe_every, 20.0, lambda: 1000) == 50.0
    assert probe_budget.probe_period(T.probe_every, 5.0, lambda: 1000) == 200.0


def host(count: int, rate: float, clock: Clock, seed: int = 7) -> list[ClaimWatch]:
    """`count` VIPs held on one host, each watched with the host's budget, started together."""
    probe_budget.set_vips(count)
    draw = random.Random(seed).random
    return [ClaimWatch([OURS], clock, idle_period=lambda: probe_budget.probe_period(T.probe_every, rate), draw=draw)
            for _ in range(count)]


def run(watches: list[ClaimWatch], clock: Clock, seconds: float, step: float = 0.05) -> Counter[int]:
    """Probes that fall due per whole second of the fake clock."""
    sent: Counter[int] = Counter()
    start = clock.now
    for _ in range(round(seconds / step)):
        for w in watches:
            if w.probe_due():
                sent[int(clock.now - start)] += 1
        clock.now += step
    return sent


def test_a_thousand_vips_send_the_budget_per_second_spread_over_time() -> None:
    clock = Clock(100.0)
    watches = host(1000, 20.0, clock)
    per_second = run(watches, clock, 150.0)
    # Each VIP probes every 1000 / 20 = 50 s: in any 100 s, 2 probes per VIP, 20 per second
    # on average (one probe every 2 s per VIP would be 500 per second).
    assert sum(per_second[s] for s in range(50, 150)) == 2000
    # Spread by the random phases: no second carries a burst (seeded: the same draws each run).
    assert max(per_second.values()) <= 2 * 20
    # The first probes are spread over the first period too, not sent at start-up together.
    assert sum(per_second[s] for s in range(50)) == 1000 and per_second[0] <= 2 * 20


def test_few_vips_keep_the_two_second_probe() -> None:
    clock = Clock(100.0)
    per_second = run(host(10, 20.0, clock), clock, 40.0)
    assert sum(per_second[s] for s in range(20, 40)) == 10 * 20 // 2


def test_a_vip_with_a_claim_probes_fast_while_the_others_keep_the_budget() -> None:
    clock = Clock(100.0)
    watches = host(1000, 20.0, clock)
    claimed = watches[0]
    claimed.feed([Sighting(ROGUE, "arp-reply", clock.now)])
    assert run([claimed], clock, 2.0).total() == round(2.0 / T.probe_fast) - 1  # from 0.25 s on, every 0.25 s
    clock.now += T.expires_after
    claimed.tick()  # the claim is over: back to the budget's period
    assert claimed.seen_now() is None
    seconds = sorted(run([claimed], clock, 100.0))  # the fast probe already planned, then every 50 s
    assert len(seconds) == 3 and seconds[2] - seconds[1] == 50


def test_a_vip_added_later_stretches_the_period_at_the_next_probe() -> None:
    clock = Clock(100.0)
    w = host(1, 20.0, clock)[0]
    assert run([w], clock, 10.0).total() == 5  # alone: every 2 s
    probe_budget.set_vips(400)  # the supervisor added VIPs: 20 s now
    assert run([w], clock, 60.0).total() == 3


def test_the_count_the_supervisor_writes_reaches_a_forked_worker() -> None:
    probe_budget.set_vips(1)
    read_end, write_end = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: reads the count after the supervisor changed it
        try:
            os.close(read_end)
            os.read(go_r, 1)
            os.write(write_end, str(probe_budget.vips()).encode())
        finally:
            os._exit(0)
    try:
        os.close(write_end)
        probe_budget.set_vips(321)  # after the fork, as when a VIP is added
        os.write(go_w, b"x")
        with os.fdopen(read_end, "rb") as answer:
            assert answer.read() == b"321"
    finally:
        os.waitpid(pid, 0)
        os.close(go_r)
        os.close(go_w)


@pytest.mark.parametrize("raw", ["0", "0.5", "1001", "nan", "inf", "fast"])
def test_a_bad_rate_is_refused_at_start(raw: str) -> None:
    with pytest.raises(ConfigError, match="CLAIM_PROBE_RATE"):
        load({"INTERFACE": "lo", "HOSTNAME": "h1", "CLAIM_PROBE_RATE": raw})


def test_the_worker_takes_the_agent_s_rate_and_the_host_s_count() -> None:
    from multiprocessing import Pipe

    from link.vocabulary.vip import VipSpec
    from link.worker.entry import build_worker

    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "ETCD_HOSTS": "http://127.0.0.1:1", "CLAIM_PROBE_RATE": "5"})
    assert load({"INTERFACE": "lo", "HOSTNAME": "h1"}).claim_probe_rate == probe_budget.DEFAULT_RATE
    ours, theirs = Pipe()
    worker = build_worker(config, VipSpec(id="vip-1", ip="198.51.100.50/32"), theirs)
    try:
        probe_budget.set_vips(100)
        assert worker.claims.probe_period() == 100 / 5
        probe_budget.set_vips(3)
        assert worker.claims.probe_period() == T.probe_every
    finally:
        worker.etcd.close()
        os.close(worker._wake_r)
        os.close(worker._wake_w)
        ours.close()
        theirs.close()
