"""exoip's rules in the lab: the best priority holds, preempts after a delay, signals shift it."""
from __future__ import annotations

import os
import signal

import pytest

from tests.integration.test_health import holds_for
from tests.lab import timed_wait, wait_until
from tests.lab.checks import BoundWatch

pytestmark = pytest.mark.lab

VIP = "198.51.100.90/32"
PRIORITIES = {"h1": "5", "h2": "10", "h3": "20"}
DELAY = 1.5


def start(lab, **env):
    """h1 first, so it holds the VIP before the others compete (with preemption it would win
    anyway, after PREEMPT_DELAY; without, the first to arrive keeps it)."""
    ids = {}
    for host in lab.hosts:
        host.start_agent(PRIORITY=PRIORITIES[host.name], PREEMPT_DELAY=f"{DELAY}s", **env).wait_ready(30)
        ids.update(lab.add_vip(VIP, [host]))
        if host.name == "h1":
            assert lab.wait_agreement(VIP, ids) == "h1"
    return ids


@pytest.mark.lab_timeout(120)
def test_the_best_priority_holds_and_takes_the_vip_back_after_the_delay(lab):
    ids = start(lab)
    assert lab.wait_agreement(VIP, ids) == "h1"
    got = lab.ip_object("h2", ids["h2"])
    seen = {c["host"]: (c["priority"], c["state"]) for c in got["candidates"]}
    assert seen == {"h1": (5, "ACTIVATED"), "h2": (10, "STANDBY"), "h3": (20, "STANDBY")}, got

    with BoundWatch(lab, VIP) as watch:
        lab.host(1).agent.stop()
        assert lab.wait_agreement(VIP, {k: v for k, v in ids.items() if k != "h1"}) == "h2"
        lab.host(1).start_agent(PRIORITY="5", PREEMPT_DELAY=f"{DELAY}s").wait_ready(30)
        # h1 comes back as a standby, then takes over after the delay: not before.
        wait_until(lambda: lab.ip_object("h1", ids["h1"])["status"] == "STANDBY", 10, what="h1 to stand by")
        holder, took = timed_wait(lambda: lab.holder(VIP) == "h1" and "h1", DELAY + 5, what="h1 to take the VIP back")
        assert lab.wait_agreement(VIP, ids) == "h1"
    assert watch.overlaps() == [], watch.history()
    assert any(b == ("h2",) for _, b in watch.samples), "h2 never held the VIP"


@pytest.mark.lab_timeout(120)
def test_without_preemption_the_holder_keeps_the_vip(lab):
    ids = start(lab, PREEMPT="false")
    assert lab.wait_agreement(VIP, ids) == "h1"
    lab.host(1).agent.stop()
    assert lab.wait_agreement(VIP, {k: v for k, v in ids.items() if k != "h1"}) == "h2"
    lab.host(1).start_agent(PRIORITY="5", PREEMPT="false", PREEMPT_DELAY=f"{DELAY}s").wait_ready(30)
    wait_until(lambda: lab.ip_object("h1", ids["h1"])["status"] == "STANDBY", 10, what="h1 to stand by")
    holds_for(lambda: lab.bound(VIP) == ["h2"], DELAY * 2, what="h2 keeps the VIP")


@pytest.mark.lab_timeout(120)
def test_sigusr2_demotes_the_holder_until_it_hands_over(lab):
    ids = start(lab)
    assert lab.wait_agreement(VIP, ids) == "h1"
    with BoundWatch(lab, VIP) as watch:
        for expected in range(6, 12):  # 5 -> 11: worse than h2's 10
            os.kill(lab.host(1).agent.pid, signal.SIGUSR2)
            wait_until(lambda e=expected: lab.ip_object("h1", ids["h1"])["priority"] == e, 5, what=f"h1 at priority {expected}")
        timed_wait(lambda: lab.holder(VIP) == "h2", DELAY + 5, what="h2 to take over from the demoted h1")
        assert lab.wait_agreement(VIP, ids) == "h2"
        os.kill(lab.host(1).agent.pid, signal.SIGUSR1)  # 10: equal to h2, which stays
        wait_until(lambda: lab.ip_object("h1", ids["h1"])["priority"] == 10, 5, what="h1 at priority 10")
        holds_for(lambda: lab.bound(VIP) == ["h2"], DELAY * 2, what="equal priority: h2 stays")
    assert watch.overlaps() == [], watch.history()


def test_priority_per_vip_and_bad_values(lab):
    lab.start_agents(lab.hosts[:1])
    resp = lab.host(1).api("POST", "/ips", {"ip": VIP, "priority": 3, "preempt": False})
    assert resp.status == 201 and (resp.body["priority"], resp.body["preempt"]) == (3, False), resp
    for body, field in (({"ip": "198.51.100.91/32", "priority": 256}, "priority"),
                        ({"ip": "198.51.100.91/32", "priority": "high"}, "priority"),
                        ({"ip": "198.51.100.91/32", "preempt": "yes"}, "preempt")):
        bad = lab.host(1).api("POST", "/ips", body)
        assert bad.status == 400 and field in bad.body["error"], bad


@pytest.mark.lab_timeout(60)
def test_at_a_cold_start_the_best_priority_ends_up_holding(lab):
    for host in lab.hosts:
        host.start_agent(PRIORITY=PRIORITIES[host.name], PREEMPT_DELAY=f"{DELAY}s")
    for host in lab.hosts:
        host.agent.wait_ready(30)
    ids = lab.add_vip(VIP, reversed(lab.hosts))  # the worst first: it may take the free lock
    wait_until(lambda: lab.agreement(VIP, ids) == "h1", DELAY + 5, what="h1 (the best priority) to hold the VIP")
