"""etcd goes away: LinK's rule (activate) and the two other policies; etcd comes back."""
from __future__ import annotations

import pytest

from tests.lab import LAB_AGENT_ENV, timed_wait, wait_until
from tests.integration.test_health import holds_for

pytestmark = pytest.mark.lab

VIP = "198.51.100.70/32"
RETRY = 3
LEASE = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])


def start(lab, policy, **env):
    lab.start_agents(FAULT_POLICY=policy, KEEPALIVE_RETRY=str(RETRY), **env)
    ids = lab.add_vip(VIP)
    return ids, lab.wait_agreement(VIP, ids)


def statuses(lab, ids):
    return {name: lab.ip_object(name, vip_id)["status"] for name, vip_id in ids.items()}


@pytest.mark.lab_timeout(90)
def test_activate_every_host_binds_during_the_outage_then_one_holder_reannounces(lab):
    ids, holder = start(lab, "activate")
    lab.etcd.stop()
    everyone = sorted(h.name for h in lab.hosts)
    wait_until(lambda: sorted(lab.bound(VIP)) == everyone, 10, what="every host to bind the VIP (LinK's rule)")
    assert set(statuses(lab, ids).values()) == {"ACTIVATED"}

    capture = lab.capture("after-outage")
    lab.etcd.start()  # returns once etcd answers its health check
    # Two lease periods: the losers' leases are renewed or re-granted, one host keeps or wins
    # the lock, the others see it and unbind.
    winner, took = timed_wait(lambda: lab.agreement(VIP, ids), 2 * LEASE + 0.5, what="one holder after the outage")
    print(f"etcd back: one holder ({winner}) after {took:.3f}s")
    mac = lab.host(winner).mac
    wait_until(lambda: capture.announcements(VIP.split("/")[0], mac), 5, what=f"{winner} to announce the VIP again")
    wait_until(lambda: lab.neigh(VIP) == mac, 5, what="the client to follow the winner")


@pytest.mark.lab_timeout(90)
def test_release_no_host_binds_during_the_outage(lab):
    ids, holder = start(lab, "release")
    lab.etcd.stop()
    wait_until(lambda: lab.bound(VIP) == [] and set(statuses(lab, ids).values()) == {"STANDBY"}, 10,
               what="every host to release the VIP")
    lab.etcd.start()
    lab.wait_agreement(VIP, ids, timeout=10)


@pytest.mark.lab_timeout(90)
def test_keep_the_holder_alone_keeps_it_during_the_outage(lab):
    ids, holder = start(lab, "keep")
    lab.etcd.stop()
    # Long enough for KEEPALIVE_RETRY failures at three cycles per 1 s lease, twice over.
    holds_for(lambda: lab.bound(VIP) == [holder], 2.0, what=f"{holder} alone keeps the VIP")
    lab.etcd.start()
    assert lab.wait_agreement(VIP, ids, timeout=10) == holder


def test_a_vip_can_choose_its_own_policy(lab):
    lab.start_agents()
    resp = lab.host(1).api("POST", "/ips", {"ip": VIP, "fault_policy": "release"})
    assert resp.status == 201 and resp.body["fault_policy"] == "release", resp
    bad = lab.host(1).api("POST", "/ips", {"ip": "198.51.100.71/32", "fault_policy": "sometimes"})
    assert bad.status == 400 and "fault_policy" in bad.body["error"], bad


def test_a_holder_cut_off_from_etcd_unbinds_within_a_lease_once_the_partition_heals(lab):
    # Without tracking (LinK v2's behaviour): a tracked INTERFACE would make the holder unbind
    # at once when its link goes (tests/integration/test_track_interfaces.py).
    ids, holder = start(lab, "activate", TRACK_INTERFACES="none")
    lab.host(holder).link_down()  # cut off from etcd (and from everyone)
    new = wait_until(lambda: lab.holder(VIP, exclude=[holder]), LEASE + 1, what="a peer to take the VIP")
    assert holder in lab.bound(VIP), "LinK's rule: a host that cannot reach etcd keeps the VIP"
    lab.host(holder).link_up()
    _, took = timed_wait(lambda: holder not in lab.bound(VIP), LEASE + 0.5, what=f"{holder} to unbind after the partition")
    print(f"partition healed: {holder} unbound after {took:.3f}s")
    assert lab.wait_agreement(VIP, ids) == new
