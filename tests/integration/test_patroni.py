"""A VIP that follows Patroni's leader key, with a real Patroni (Debian 12's `patroni` and
`postgresql`) on two lab hosts and the lab's etcd (issue 17, part 1: vip-manager's use).

One test, kept lean for the suite's budget: both agents follow /service/lab/leader before
Patroni runs (nobody binds), h1's Patroni bootstraps the primary, h2's becomes its replica; the
VIP sits on the primary. The primary's Patroni is SIGKILLed (the issue's case) and its
PostgreSQL left running: it stays a writable primary beside the one Patroni promotes (Patroni's
watchdog would fence it; none here), which is exactly when the VIP alone decides where clients
write. Its link agent stays, so the test also sees it let the VIP go. Patroni's lease expires
(TTL 10 s), h2's Patroni takes the key and promotes: the VIP must be on h2, and on h2 alone,
within TTL + 1 s of the kill, and `psql` from the client through the VIP must reach a primary
that is h2's PostgreSQL, not the old one still running.
"""
from __future__ import annotations

import os
import time
from typing import Iterator

import pytest

from tests.lab import Lab
from tests.lab import patroni
from tests.lab.waiting import timed_wait, wait_until

pytestmark = pytest.mark.lab

VIP = "198.51.100.60/32"
ADDRESS = VIP.split("/")[0]


@pytest.fixture
def members(lab: Lab) -> Iterator[list[patroni.Member]]:
    reason = patroni.missing()
    if reason:
        if os.environ.get("LINK_LAB_REQUIRED") == "1":
            pytest.fail(f"LINK_LAB_REQUIRED=1 but {reason}")
        pytest.skip(reason)
    made = [patroni.Member(host, ADDRESS) for host in lab.hosts]
    try:
        yield made
    finally:
        patroni.clean(made)  # every Patroni and PostgreSQL stopped by PID, also when the test failed


def through_vip(member: patroni.Member, lab: Lab, sql: str) -> str | None:
    """What `psql` from the client namespace, connected to the VIP, answers (None: no answer)."""
    out = member.psql(ADDRESS, sql, ns=lab.client_ns, timeout=2.0)
    return out.stdout.strip() if out.returncode == 0 else None


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(150)
def test_the_vip_follows_patronis_leader_to_the_new_primary(lab: Lab, members: list[patroni.Member]) -> None:
    started = time.monotonic()
    lab.start_agents()
    ids = {}
    for host in lab.hosts:  # HOSTNAME h1/h2 is each Patroni's member name: follow_value's default
        resp = host.api("POST", "/ips", {"ip": VIP, "follow": patroni.LEADER_KEY})
        assert resp.status == 201, resp
        assert resp.body["follow"] == patroni.LEADER_KEY and resp.body["follow_value"] == host.name
        ids[host.name] = resp.body["id"]

    for member in members:  # together: one bootstraps the cluster (Patroni's /initialize key), the other replicates it
        member.start()
    primary = patroni.wait_primary(members, 40.0)
    replica = next(m for m in members if m is not primary)
    old, new = primary.host, replica.host
    wait_until(lambda: replica.role() == "replica", 40.0, 0.2, f"{new.name}'s PostgreSQL streaming as a replica")
    assert lab.etcd.get(patroni.LEADER_KEY) == old.name and lab.etcd.lease(patroni.LEADER_KEY)
    wait_until(lambda: lab.bound(VIP) == [old.name], 5.0, 0.05, f"{VIP} on {old.name} alone, Patroni's primary")
    shown = {name: lab.ip_object(name, vip_id) for name, vip_id in ids.items()}
    assert [shown[h.name]["status"] for h in (old, new)] == ["ACTIVATED", "STANDBY"], shown
    assert all(obj["holder"] == old.name and obj["follow"] == patroni.LEADER_KEY for obj in shown.values()), shown
    assert through_vip(primary, lab, "select pg_is_in_recovery()") == "f"
    setup = time.monotonic() - started

    killed = primary.kill(postgres=False)
    t0 = time.monotonic()
    assert killed and primary.postmaster() is not None  # the old primary's PostgreSQL runs on, unfenced
    try:
        _, took = timed_wait(lambda: lab.bound(VIP) == [new.name], patroni.TTL + 1.0, 0.05,
                             f"{VIP} on {new.name} alone within Patroni's TTL + 1 s", start=t0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nleader key: {lab.etcd.get(patroni.LEADER_KEY)!r}\n"
                             f"{lab.explain(VIP, ids)}\n{replica.log()}") from None
    print(f"\nthe VIP was on the new primary's host {took:.2f} s after the kill (TTL {patroni.TTL} s); "
          f"set-up took {setup:.1f} s")
    assert lab.etcd.get(patroni.LEADER_KEY) == new.name

    # Patroni writes the key, then promotes: psql through the VIP reaches the new primary's
    # PostgreSQL (its listen_addresses name its host) once it is out of recovery.
    def primary_through_vip() -> str | None:
        answer = through_vip(replica, lab, "select pg_is_in_recovery(), current_setting('listen_addresses')")
        return answer if answer and answer.startswith("f|") else None

    answer = wait_until(primary_through_vip, 10.0, 0.2, "psql through the VIP reaching a primary")
    assert answer == f"f|{new.ip},{ADDRESS}", answer
    assert primary.role() == "primary"  # two writable primaries: the VIP is what sends clients to the right one
    assert lab.neigh_host(VIP) == new.name  # the client's ARP entry follows (the new holder's gratuitous ARP)
    after = lab.ip_object(new.name, ids[new.name])
    assert (after["status"], after["holder"]) == ("ACTIVATED", new.name)
    # The old primary's agent, still running, heard the key change and let the VIP go.
    assert lab.ip_object(old.name, ids[old.name])["status"] == "STANDBY"
