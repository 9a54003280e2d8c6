"""Health checks in the lab: a failing holder hands the VIP over, and recovers without a flap."""
from __future__ import annotations

import time

import pytest

from tests.lab import timed_wait, wait_until
from tests.lab.checks import BoundWatch

pytestmark = pytest.mark.lab

VIP = "198.51.100.60/32"
INTERVAL = 0.2
FAIL_COUNT = 3


def holds_for(predicate, seconds: float, interval: float = 0.05, what: str = "") -> None:
    """Assert `predicate` stays true for a whole window: checking that nothing happens (no
    flap, no release) needs a window of observation, not a wait for a condition."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / interval) + 2):
        assert predicate(), f"stopped holding: {what}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def start(lab, scripts):
    """Agents whose SCRIPTS_DIR holds `healthy FLAG` (passes while FLAG does not exist); flag
    files of their own per host, in a directory the checks (run as nobody) can look into."""
    scripts.add("healthy", 'test ! -e "$1"\n')
    lab.start_agents(HEALTH_CHECK_INTERVAL=f"{int(INTERVAL * 1000)}ms", FAIL_COUNT_BEFORE_FAILOVER=str(FAIL_COUNT),
                     SCRIPTS_DIR=str(scripts.path))
    return {h.name: scripts.out / f"{h.name}.unhealthy" for h in lab.hosts}


def add_with_checks(lab, scripts, flags):
    """The VIP on every host, each with two checks: a flag file of its own that must not exist
    (the first check) and the agent's own API port (the second, always passing)."""
    ids = {}
    for host in lab.hosts:
        checks = [
            {"type": "EXEC", "command": [str(scripts.path / "healthy"), str(flags[host.name])]},
            {"type": "TCP", "host": "127.0.0.1", "port": 1313},
        ]
        resp = host.api("POST", "/ips", {"ip": VIP, "checks": checks})
        assert resp.status == 201, resp
        assert resp.body["checks"][0]["type"] == "EXEC" and resp.body["checks"][1]["port"] == 1313
        ids[host.name] = resp.body["id"]
    return ids


def test_only_the_first_of_two_checks_failing_moves_the_vip_and_recovery_does_not_flap(lab, scripts):
    flags = start(lab, scripts)
    ids = add_with_checks(lab, scripts, flags)
    old = lab.wait_agreement(VIP, ids)

    with BoundWatch(lab, VIP) as watch:
        flags[old].touch()
        new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]), FAIL_COUNT * INTERVAL + 1 + INTERVAL,
                               what="a healthy host to take the VIP")
        print(f"{old} unhealthy: {new} bound {VIP} after {took:.3f}s")
        assert old not in lab.bound(VIP), "the FAILING host kept the VIP"
        failing = lab.ip_object(old, ids[old])
        assert failing["status"] == "FAILING", failing

        flags[old].unlink()
        wait_until(lambda: lab.ip_object(old, ids[old])["status"] == "STANDBY", 3, what=f"{old} to recover to STANDBY")
        # No flap: the new holder keeps the VIP while the recovered host stands by.
        holds_for(lambda: lab.bound(VIP) == [new], 2.0, what=f"only {new} binds the VIP")
        assert lab.wait_agreement(VIP, ids) == new
    assert watch.overlaps() == [], watch.history()


def test_checks_replaced_live_keep_the_vip_bound(lab, scripts):
    flags = start(lab, scripts)
    ids = add_with_checks(lab, scripts, flags)
    holder = lab.wait_agreement(VIP, ids)
    worker_pid = lab.ip_object(holder, ids[holder])["worker"]["pid"]
    with BoundWatch(lab, VIP) as watch:
        resp = lab.host(holder).api("PATCH", f"/ips/{ids[holder]}", {"healthchecks": [{"type": "TCP", "host": "127.0.0.1", "port": 1313}]})
        assert resp.status == 200 and len(resp.body["checks"]) == 1, resp
        flags[holder].touch()  # no longer checked: nothing must happen
        holds_for(lambda: lab.bound(VIP) == [holder], FAIL_COUNT * INTERVAL * 3, what=f"{holder} keeps the VIP")
    assert {b for _, b in watch.samples} == {(holder,)}, watch.history()
    after = lab.ip_object(holder, ids[holder])
    assert after["status"] == "ACTIVATED" and after["worker"]["pid"] == worker_pid  # not restarted
