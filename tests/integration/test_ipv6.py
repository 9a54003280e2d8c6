"""An IPv6 VIP works like an IPv4 one: one holder, announced by unsolicited neighbour
advertisements, and the client's neighbour entry follows it across a failover.

Linux updates an existing neighbour entry on an unsolicited advertisement with the override
flag, but does not create one: the client pings the VIP first to have an entry to update.
"""
from __future__ import annotations

import time

import pytest

from tests.lab import LAB_AGENT_ENV, timed_wait, wait_until
from tests.lab.pcap import Capture, NeighbourAdvert

pytestmark = pytest.mark.lab

VIP = "2001:db8::50/128"
ADDR = "2001:db8::50"
COUNT = int(LAB_AGENT_ENV["ARP_GRATUITOUS_COUNT"])
KEEPALIVE = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])
NA_FILTER = "icmp6 and ip6[40] == 136"  # ICMPv6 type 136: neighbour advertisements only


def announced_by(capture: Capture, mac: str, quiet: float = 0.6, timeout: float = 5.0) -> list[NeighbourAdvert]:
    """The unsolicited advertisements of ADDR sent by `mac`, once COUNT were seen and none came
    for `quiet` seconds (by the capture's clock against wall time)."""
    def settled() -> list[NeighbourAdvert] | None:
        seen = [na for na in capture.adverts() if na.src_mac == mac and na.is_unsolicited_announcement(ADDR)]
        if len(seen) >= COUNT and time.time() - seen[-1].time >= quiet:
            return seen
        return None
    return wait_until(settled, timeout, 0.05, f"{COUNT} neighbour advertisements of {ADDR} from {mac}")


def check_frames(adverts: list[NeighbourAdvert], mac: str) -> None:
    assert len(adverts) == COUNT, adverts
    for na in adverts:
        assert (na.dst_mac, na.dst_ip, na.hop_limit) == ("33:33:00:00:00:01", "ff02::1", 255), na
        assert (na.router, na.solicited, na.override) == (False, False, True), na
        assert (na.src_ip, na.target, na.target_mac) == (ADDR, ADDR, mac), na


def test_the_client_neighbour_entry_follows_an_ipv6_vip(lab):
    capture = lab.capture("client-na", bpf=NA_FILTER)
    lab.start_agents()
    ids = lab.add_vip(VIP)
    assert all(lab.ip_object(name, vip_id)["ip"] == VIP for name, vip_id in ids.items())
    old = lab.wait_agreement(VIP, ids)
    old_mac = lab.host(old).mac
    check_frames(announced_by(capture, old_mac), old_mac)

    # The client makes its entry (neighbour solicitation, answered by the holder's kernel).
    assert lab.client_ping(VIP), f"ping -6 {ADDR} from the client failed"
    assert lab.neigh(VIP) == old_mac

    start = time.monotonic()
    lab.host(old).link_down()
    new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]), KEEPALIVE + 2, what="another host to bind the VIP",
                           start=start)
    new_mac = lab.host(new).mac
    print(f"link down on {old}: {new} bound {VIP} after {took:.3f}s")
    wait_until(lambda: lab.neigh(VIP) == new_mac, 3, what=f"the client's entry for {ADDR} to follow {new} ({new_mac})")
    check_frames(announced_by(capture, new_mac), new_mac)
    assert lab.client_ping(VIP), f"ping -6 {ADDR} through {new} failed"
    del ids[old]
    assert lab.wait_agreement(VIP, ids, dead=[old]) == new


def test_a_bare_ipv6_address_is_a_128(lab):
    lab.start_agents(hosts=[lab.host(1)])
    resp = lab.host(1).api("POST", "/ips", {"ip": ADDR})
    assert resp.status == 201 and resp.body["ip"] == VIP
    assert lab.wait_agreement(VIP, {"h1": resp.body["id"]}) == "h1"
    # Bound without duplicate address detection: usable at once, never "tentative".
    wait_until(lambda: lab.client_ping(VIP), 5, 0.1, f"ping -6 {ADDR}")
