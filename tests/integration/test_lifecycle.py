"""The agent's life: its supervisor killed alone, and a restart while etcd is unreachable."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from tests.lab import procs, timed_wait, wait_until
from tests.lab.checks import ip_list
from tests.lab.lab import LAB_AGENT_ENV

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
    lab.start_agents(FAULT_POLICY="activate")  # LinK's rule, which this test is about (the default is arbitrate)
    ids = lab.add_vip(VIP)
    lab.wait_agreement(VIP, ids)
    host = lab.host(2)
    assert host.agent.stop() == 0
    lab.etcd.stop()
    host.start_agent(FAULT_POLICY="activate").wait_ready(30)
    listed = [(o["id"], o["ip"]) for o in ip_list(host.api("GET", "/ips").body)]
    assert listed == [(ids["h2"], VIP)]
    # LinK's rule (FAULT_POLICY=activate): a host that cannot reach etcd binds the VIP.
    wait_until(lambda: host.has(VIP), 10, what="h2 to bind the VIP with etcd unreachable")
    assert host.api("GET", f"/ips/{ids['h2']}").body["ip"]["status"] == "ACTIVATED"
    lab.etcd.start()
    lab.wait_agreement(VIP, ids, timeout=10)


@pytest.mark.hosts(1)
@pytest.mark.lab_timeout(90)
def test_a_long_etcd_outage_logs_one_warning_per_30_s_and_a_line_when_etcd_is_back(lab):
    lab.start_agents()
    host = lab.host(1)
    ids = lab.add_vip(VIP)
    lab.wait_agreement(VIP, ids)
    before = len(host.log_path.read_text(errors="replace").splitlines())
    lab.etcd.stop()
    # 33 s of outage: about 100 failed cycles at the lab's tick.
    time.sleep(33)
    lab.etcd.start()
    wait_until(lambda: "etcd answers again" in host.log_path.read_text(errors="replace"), 20,
               what="the worker to say etcd answers again")
    lines = host.log_path.read_text(errors="replace").splitlines()[before:]
    warnings = [line for line in lines if " WARNING " in line and VIP in line and "etcd" in line]
    print("\n".join(warnings))
    assert 2 <= len(warnings) <= 3, warnings  # the first, then one 30 s later (a third if a cycle lands on 60 s)
    assert any("similar warnings in the last 30 s not logged" in line for line in warnings[1:]), warnings
    assert any("etcd answers again" in line and VIP in line for line in lines)
    # The failed cycles kept to the tick (the lab's 1 s lease: a cycle every 333 ms, 90 in
    # 30 s), with no extra cycle for each failed attempt of the watch to come back (one every
    # 0.5 s made ~120).
    tick = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"]) / 3
    streak = int(re.search(r"unreachable (\d+) times in a row", warnings[1]).group(1))
    assert streak <= 30 / tick + 8, warnings[1]
    lab.wait_agreement(VIP, ids, timeout=10)
