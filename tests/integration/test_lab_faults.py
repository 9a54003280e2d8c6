"""The lab's fault helpers (tests/lab/faults.py) do what the chaos run and the benchmarks
count on: etcd frozen or killed and back, one host cut from etcd with its LAN up, a rogue
machine that takes the client with one announcement. No agent: the faults themselves."""
from __future__ import annotations

import pytest

from tests.lab import http, netns
from tests.lab.faults import ROGUE_MAC, EtcdCut, EtcdOutage, Rogue, etcd_address, lab_etcd
from tests.lab.lab import BRIDGE_IP, CLIENT_IP, ETCD_CLIENT_PORT, Lab
from tests.lab.waiting import wait_until

pytestmark = pytest.mark.lab


def etcd_answers(lab: Lab, ns: str) -> bool:
    """etcd's /health, asked from namespace `ns` (a host's, or the bridge's)."""
    try:
        resp = http.request(ns, BRIDGE_IP, ETCD_CLIENT_PORT, "GET", "/health", timeout=0.5)
    except OSError:
        return False
    return resp.status == 200


def pings(ns: str, ip: str) -> bool:
    return netns.exec_in(ns, "ping", "-n", "-c", "1", "-W", "1", ip, timeout=5, check=False).returncode == 0


@pytest.mark.parametrize("how", EtcdOutage.HOWS)
def test_an_etcd_outage_silences_etcd_until_it_ends(lab, how):
    h1 = lab.host(1)
    assert etcd_answers(lab, h1.ns)
    pid = lab.etcd.pid
    with EtcdOutage(lab_etcd(lab), how):
        assert not etcd_answers(lab, h1.ns) and not etcd_answers(lab, lab.bridge_ns)
        assert pings(h1.ns, lab.host(2).ip), "the LAN stays up"
    assert etcd_answers(lab, h1.ns)
    # Frozen: the same process thawed; killed: a new one on the same data dir.
    assert (lab.etcd.pid == pid) == (how == "freeze")
    lab.etcd.put("/check", "kept")
    assert lab.etcd.get("/check") == "kept"


def test_a_cut_host_loses_etcd_and_keeps_its_lan(lab):
    h1, h2 = lab.host(1), lab.host(2)
    cut = EtcdCut(h1, [etcd_address(lab.etcd)])
    with cut:
        assert cut.routes() == [BRIDGE_IP]
        assert not etcd_answers(lab, h1.ns)
        assert etcd_answers(lab, h2.ns), "only this host is cut"
        assert pings(h1.ns, h2.ip) and pings(h1.ns, CLIENT_IP), "its LAN is up"
    assert cut.routes() == []
    assert etcd_answers(lab, h1.ns)


def test_a_rogue_takes_the_client_with_one_announcement_and_answers_for_the_vip(lab):
    vip = "198.51.100.60/32"
    h1 = lab.host(1)
    netns.ip(h1.ns, "addr", "add", vip, "dev", "eth1")
    assert pings(lab.client_ns, "198.51.100.60")
    assert lab.neigh(vip) == h1.mac
    rogue = Rogue(lab)
    rogue.claim(vip)
    wait_until(lambda: lab.neigh(vip) == ROGUE_MAC, 3, 0.05, "the client to follow the rogue's announcement")
    netns.ip(h1.ns, "addr", "del", vip, "dev", "eth1")
    assert pings(lab.client_ns, "198.51.100.60"), "the rogue's kernel answers for the VIP"
    rogue.leave(vip)
    assert vip not in netns.ip(rogue.ns, "addr", "show").stdout


def test_a_rogue_claims_an_ipv6_vip_with_an_unsolicited_advertisement(lab):
    vip = "2001:db8::60/128"
    h1 = lab.host(1)
    netns.ip(h1.ns, "addr", "add", vip, "dev", "eth1", "nodad")
    assert pings(lab.client_ns, "2001:db8::60")
    assert lab.neigh(vip) == h1.mac
    Rogue(lab).claim(vip)
    wait_until(lambda: lab.neigh(vip) == ROGUE_MAC, 3, 0.05, "the client to follow the rogue's advertisement")
