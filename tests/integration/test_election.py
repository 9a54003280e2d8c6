"""Three hosts, one client, a real etcd: who binds a VIP, what the client learns, what ps shows."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.lab import LAB_AGENT_ENV, lock_key, quiet_for, wait_until
from tests.lab.checks import ip_list

pytestmark = pytest.mark.lab

VIP = "198.51.100.50/32"
VIP2 = "198.51.100.51/32"
ADDR = VIP.split("/")[0]
COUNT = int(LAB_AGENT_ENV["ARP_GRATUITOUS_COUNT"])
INTERVAL = 0.2  # ARP_GRATUITOUS_INTERVAL=200ms


def test_one_host_binds_the_vip_and_announces_it(lab):
    capture = lab.capture()
    lab.start_agents()
    ids = lab.add_vip(VIP)
    assert len(set(ids.values())) == 3
    holder = lab.wait_agreement(VIP, ids, timeout=10)
    mac = lab.host(holder).mac

    # The client learnt the VIP from the gratuitous ARPs alone (it never asked).
    wait_until(lambda: lab.neigh(VIP) == mac, 3, what=f"client neighbour {ADDR} -> {mac}")

    seen = quiet_for(capture, ADDR, quiet=3 * INTERVAL, timeout=5 + COUNT * INTERVAL)
    assert {a.src_mac for a in seen} == {mac}, f"announcements from non-holders: {seen}"
    requests = [a for a in seen if a.is_gratuitous_request(ADDR)]
    replies = [a for a in seen if a.is_gratuitous_reply(ADDR)]
    assert all(a.sender_mac == mac for a in seen)
    assert len(requests) == COUNT, f"expected {COUNT} gratuitous ARP requests, saw {requests}"
    assert len(replies) == COUNT, f"expected {COUNT} gratuitous ARP replies (target MAC = own MAC), saw {replies}"
    gaps = [b.time - a.time for a, b in zip(requests, requests[1:])]
    assert all(0.5 * INTERVAL <= g <= INTERVAL + 0.5 for g in gaps), f"announcements not ARP_GRATUITOUS_INTERVAL apart: {gaps}"

    # Still exactly one holder, and the VIP answers the client.
    assert lab.agreement(VIP, ids) == holder, lab.explain(VIP, ids)
    assert lab.client_ping(VIP)
    assert lab.neigh(VIP) == mac


def test_two_vips_are_elected_independently(lab):
    lab.start_agents()
    ids1 = lab.add_vip(VIP)
    ids2 = lab.add_vip(VIP2)
    holder1 = lab.wait_agreement(VIP, ids1)
    holder2 = lab.wait_agreement(VIP2, ids2)
    assert lab.etcd.get(lock_key(VIP)) == holder1
    assert lab.etcd.get(lock_key(VIP2)) == holder2
    for h in lab.hosts:
        listed = {(o["id"], o["ip"]) for o in ip_list(h.api("GET", "/ips").body)}
        assert listed == {(ids1[h.name], VIP), (ids2[h.name], VIP2)}

    # Deleting the second VIP everywhere releases it; the first one is left alone.
    for h in lab.hosts:
        resp = h.api("DELETE", f"/ips/{ids2[h.name]}")
        assert resp.status == 204, resp
        assert h.api("GET", f"/ips/{ids2[h.name]}").status == 404
    assert lab.bound(VIP2) == []
    wait_until(lambda: lab.etcd.get(lock_key(VIP2)) is None, 3, what="the lock of the deleted VIP to go")
    assert lab.agreement(VIP, ids1) == holder1, lab.explain(VIP, ids1)
    for h in lab.hosts:
        assert [o["id"] for o in ip_list(h.api("GET", "/ips").body)] == [ids1[h.name]]


TITLE = re.compile(r"^link: vip (\S+) (BOOTING|STANDBY|ACTIVATED|FAILING)$")


def ps_titles() -> dict[int, str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, timeout=10, check=True).stdout
    titles = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        titles[int(pid)] = args.strip()
    return titles


def test_ps_shows_one_titled_process_per_vip_per_agent(lab):
    lab.start_agents()
    ids1 = lab.add_vip(VIP)
    ids2 = lab.add_vip(VIP2)
    holder1 = lab.wait_agreement(VIP, ids1)
    holder2 = lab.wait_agreement(VIP2, ids2)

    def titles_match() -> bool:
        ps = ps_titles()
        for h in lab.hosts:
            tree = h.agent.tree()
            workers = {}
            for pid in tree[1:]:
                m = TITLE.match(ps.get(pid, ""))
                if m:
                    workers.setdefault(m.group(1), []).append(m.group(2))
            want = {VIP: ["ACTIVATED" if h.name == holder1 else "STANDBY"],
                    VIP2: ["ACTIVATED" if h.name == holder2 else "STANDBY"]}
            if workers != want:
                return False
        return True

    wait_until(titles_match, 5, 0.1, "worker titles `link: vip <ip> <STATE>` matching the API")
    ps = ps_titles()
    for h in lab.hosts:
        title = ps.get(h.agent.pid, "")
        assert title.startswith("link") and "supervisor" in title, f"supervisor title on {h.name}: {title!r}"


VIP6 = "2001:db8::50/128"


@pytest.mark.hosts(2)
def test_ipv6_vip_is_elected_and_moves(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP6)
    holder = lab.wait_agreement(VIP6, ids)
    assert lab.client_ping(VIP6)
    assert lab.neigh(VIP6) == lab.host(holder).mac

    # A clean hand-over: the unsolicited NA of the new holder updates the client's entry.
    agent = lab.host(holder).agent
    agent.stop()
    new = wait_until(lambda: lab.holder(VIP6, exclude=[holder]), 1.0, what="the other host to bind the IPv6 VIP")
    wait_until(lambda: lab.neigh(VIP6) == lab.host(new).mac, 2, what="the client's IPv6 neighbour entry to follow")
    assert lab.client_ping(VIP6)
