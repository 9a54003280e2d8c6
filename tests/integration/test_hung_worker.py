"""A hung worker is replaced (gunicorn's timeout): the holder's worker SIGSTOPped for good is
killed by its supervisor and respawned; the VIP ends up on exactly one host."""
from __future__ import annotations

import os
import signal

import pytest

from link.supervisor.lifecycle import WATCH_EVERY, hung_timeout
from tests.lab import LAB_AGENT_ENV, procs, wait_until
from tests.lab.checks import BoundWatch

pytestmark = pytest.mark.lab

VIP = "198.51.100.56/32"
LEASE = max(1, round(float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])))
# Silence, the SIGTERM's grace (one lease), two looks of the watchdog, and slack for a busy
# machine: a bound on the wait, not a measure of speed.
KILLED_WITHIN = hung_timeout(LEASE) + LEASE + 2 * WATCH_EVERY + 5.0


@pytest.mark.lab_timeout(90)
def test_a_stopped_worker_is_killed_and_respawned_and_the_vip_stays_unique(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    old = lab.wait_agreement(VIP, ids)
    agent = lab.host(old).agent
    pid = lab.ip_object(old, ids[old])["worker"]["pid"]
    assert pid in agent.worker_titles(), f"worker {pid} is not among {agent.worker_titles()}"
    with BoundWatch(lab, VIP) as watch:
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: not procs.alive(pid), KILLED_WITHIN, 0.1, f"the supervisor to kill the stopped worker {pid}")
        finally:
            if procs.alive(pid):  # not killed: the test fails, but no stopped process stays behind
                procs.kill([pid])

        def respawned() -> dict | None:
            worker = lab.ip_object(old, ids[old])["worker"]
            return worker if worker["state"] == "RUNNING" and worker["pid"] not in (None, pid) else None

        worker = wait_until(respawned, 10, 0.1, "the worker to be respawned")
        assert worker["restarts"] == 1 and worker["pid"] in agent.worker_titles()
        holder = lab.wait_agreement(VIP, ids, timeout=15)
    events = lab.host(old).api("GET", f"/ips/{ids[old]}/events").body["events"]
    hung = [e for e in events if e["event"] == "worker_hung"]
    assert len(hung) == 1 and f"worker {pid} sent nothing" in hung[0]["reason"], events
    assert any(e["event"] == "worker_respawned" for e in events), events
    assert lab.bound(VIP) == [holder]
    long_overlaps = [o for o in watch.overlaps() if o[1] - o[0] > 0.25]
    assert not long_overlaps, f"two holders for more than 0.25 s: {watch.history()}"
