"""The agent's life: its supervisor killed alone, and a restart while etcd is unreachable."""
from __future__ import annotations

import os
import signal

import pytest

from tests.lab import procs, timed_wait, wait_until
from tests.lab.checks import ip_list

pytestmark = pytest.mark.lab

VIP = "198.51.100.55/32"


def test_workers_release_their_vip_when_the_supervisor_is_killed(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    old = lab.wait_agreement(VIP, ids)
    agent = lab.host(old).agent
    workers = list(agent.worker_titles())
    assert len(workers) == 1
    os.kill(agent.pid, signal.SIGKILL)  # the supervisor alone: its worker and API stay
    # The orphaned worker sees its pipe close and releases: the VIP leaves the old host and
    # another host takes it at once (no lease to wait for), then the orphans are gone.
    new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]) if old not in lab.bound(VIP) else None, 2.0,
                           what="the orphaned worker to release and another host to take the VIP")
    print(f"supervisor of {old} killed: {new} holds {VIP} after {took:.3f}s")
    wait_until(lambda: not any(procs.alive(pid) for pid in workers), 5, what="the orphaned worker to exit")
    others = {k: v for k, v in ids.items() if k != old}
    assert lab.wait_agreement(VIP, others) == new


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(90)
def test_a_restart_while_etcd_is_down_keeps_the_vips_and_follows_the_fault_rule(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    lab.wait_agreement(VIP, ids)
    host = lab.host(2)
    assert host.agent.stop() == 0
    lab.etcd.stop()
    host.start_agent().wait_ready(30)
    listed = [(o["id"], o["ip"]) for o in ip_list(host.api("GET", "/ips").body)]
    assert listed == [(ids["h2"], VIP)]
    # LinK's rule (FAULT_POLICY=activate): a host that cannot reach etcd binds the VIP.
    wait_until(lambda: host.has(VIP), 10, what="h2 to bind the VIP with etcd unreachable")
    assert host.api("GET", f"/ips/{ids['h2']}").body["ip"]["status"] == "ACTIVATED"
    lab.etcd.start()
    lab.wait_agreement(VIP, ids, timeout=10)
