"""Keys anyone with write access to etcd can put (issue 14, points 7 and 8), against real agents:
a candidate whose priority overflows, a candidate and a lock written without a lease."""
from __future__ import annotations

import pytest

from tests.integration.test_health import holds_for
from tests.integration.test_observe import scrape
from tests.lab import LAB_AGENT_ENV, lock_key, wait_until
from tests.lab.checks import BoundWatch

pytestmark = pytest.mark.lab

VIP = "198.51.100.50/32"
STORED = VIP.replace("/", "_")
CANDIDATES = f"/link/candidates/{STORED}/"
LOCK = lock_key(VIP)
LEASE = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])  # one lease, in seconds
OVERFLOW = '{"priority":1e400,"state":"STANDBY"}'  # the hostile probe's value
TAKEOVERS = "link_vip_leaseless_lock_takeovers_total"


def worker_pids(lab) -> dict[str, set[int]]:
    return {h.name: set(h.agent.worker_titles()) for h in lab.running_hosts()}


def worker_states(lab, ids) -> set[str]:
    return {obj["worker"]["state"] for obj in lab.ip_objects(ids).values()}


def takeovers(lab, ids) -> float:
    """link_vip_leaseless_lock_takeovers_total summed over the hosts."""
    total = 0.0
    for name, vip_id in ids.items():
        got = scrape(lab, name)
        total += got.get((TAKEOVERS, (("id", vip_id), ("ip", VIP))), 0.0)
    return total


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(90)
def test_a_candidate_priority_of_1e400_crashes_no_worker(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    holder = lab.wait_agreement(VIP, ids)
    pids = worker_pids(lab)
    assert all(len(p) == 1 for p in pids.values()), pids
    # The probe (no lease), and the same value on a lease: the decoder must refuse it,
    # not only the lease check.
    lab.etcd.put(CANDIDATES + "x", OVERFLOW)
    lab.etcd.put(CANDIDATES + "y", OVERFLOW, lease=lab.etcd.grant(600))
    lab.etcd.put(CANDIDATES + "z", b'{"priority":1,"state":"STANDBY\xff"}\n', lease=lab.etcd.grant(600))
    with BoundWatch(lab, VIP) as watch:
        holds_for(lambda: lab.bound(VIP) == [holder], 4 * LEASE, what=f"{holder} keeps {VIP}")
        # The standby reads the candidates when the lock is free: hand the VIP over to it.
        resp = lab.host(holder).api("POST", f"/ips/{ids[holder]}/failover")
        assert resp.status == 204, resp
        new = lab.wait_agreement(VIP, ids, timeout=5 * LEASE)
        holds_for(lambda: lab.bound(VIP) == [new], 3 * LEASE, what=f"{new} keeps {VIP}")
    assert new != holder
    assert watch.overlaps() == [], watch.history()
    assert worker_pids(lab) == pids, "a worker was respawned"
    assert worker_states(lab, ids) == {"RUNNING"}
    assert lab.agreement(VIP, ids) == new, lab.explain(VIP, ids)


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(90)
def test_a_leaseless_better_candidate_is_no_rival(lab):
    lab.start_agents(PREEMPT_DELAY="1s")
    ids = lab.add_vip(VIP)
    holder = lab.wait_agreement(VIP, ids)
    ghost = '{"priority":0,"state":"STANDBY"}'  # better than the agents' 10
    lab.etcd.put(CANDIDATES + "ghost", ghost)
    holds_for(lambda: lab.bound(VIP) == [holder] and lab.etcd.get(LOCK) == holder, 5 * LEASE,
              what=f"{holder} keeps {VIP} (PREEMPT_DELAY is 1 s)")
    assert lab.agreement(VIP, ids) == holder, lab.explain(VIP, ids)
    # The same candidate on a lease is a rival: the holder hands over (the test can see it).
    lab.etcd.put(CANDIDATES + "ghost", ghost, lease=lab.etcd.grant(600))
    wait_until(lambda: lab.bound(VIP) != [holder], 5 * LEASE, 0.02, f"{holder} to hand over to a better candidate on a lease")


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(90)
def test_a_leaseless_lock_is_taken_over_and_counted(lab):
    lab.etcd.put(LOCK, "ghost")  # before the VIP exists: no host could ever take it
    assert lab.etcd.lease(LOCK) == 0
    lab.start_agents()
    ids = lab.add_vip(VIP)
    holder = lab.wait_agreement(VIP, ids, timeout=4 * LEASE)
    assert lab.etcd.lease(LOCK) not in (None, 0)
    wait_until(lambda: takeovers(lab, ids) == 1, 12, 0.2, f"{TAKEOVERS} to count the takeover")

    # A leaseless lock over a held one: taken over again, one host binds the VIP.
    lab.etcd.put(LOCK, "ghost")
    with BoundWatch(lab, VIP) as watch:
        wait_until(lambda: lab.etcd.lease(LOCK) not in (None, 0), 4 * LEASE, 0.02, "the lock to be back on a lease")
        again = lab.wait_agreement(VIP, ids, timeout=4 * LEASE)
    assert watch.overlaps() == [], watch.history()
    wait_until(lambda: takeovers(lab, ids) == 2, 12, 0.2, f"{TAKEOVERS} to count the second takeover")
    assert lab.agreement(VIP, ids) == again and again in ids, (holder, again)
