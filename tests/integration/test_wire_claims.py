"""Duplicate claims are seen and the lock holder wins the clients back (issue 15 points 1, 2, 5):
real agents, real etcd, real packets; a rogue machine on the LAN (tests/lab/faults.Rogue, not a
link agent) and two link hosts that both hold a VIP (one cut from etcd, FAULT_POLICY=activate).

One lab for the module (two hosts, a client, the rogue); each test adds its own VIP and
deletes it at the end, the rogue leaves, no blackhole route stays.
"""
from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import module_lab
from tests.integration.test_cli import client
from tests.integration.test_wire_arbitrate import remove
from tests.lab import LAB_AGENT_ENV, Lab, timed_wait, wait_until
from tests.lab.faults import ROGUE_MAC, EtcdCut, Rogue, etcd_address, lab_etcd

pytestmark = pytest.mark.lab

LEASE = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])
NA_OR_ARP = "arp or (icmp6 and ip6[40] == 136)"


@pytest.fixture(scope="module")
def clab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with module_lab(request, hosts=2) as lab:
        # activate: both hosts hold a VIP while one is cut from etcd (LinK's rule), the split
        # brain the last test needs; the claim watch itself does not depend on the policy.
        lab.start_agents(FAULT_POLICY="activate")
        lab.rogue = Rogue(lab).plug()  # type: ignore[attr-defined]
        yield lab


@pytest.fixture
def rogue(clab: Lab) -> Iterator[Rogue]:
    found: Rogue = clab.rogue  # type: ignore[attr-defined]
    try:
        yield found
    finally:
        found.leave_all()


def elect(lab: Lab, vip: str) -> tuple[dict[str, str], str]:
    ids = lab.add_vip(vip)
    holder = lab.wait_agreement(vip, ids, timeout=15)
    if ":" in vip:
        assert lab.client_ping(vip), f"ping {vip} from the client"  # NAs update an entry, never create one
    wait_until(lambda: lab.neigh(vip) == lab.host(holder).mac, 3, what=f"the client to learn {holder}'s MAC for {vip}")
    return ids, holder


def claim_lines(lab: Lab, name: str, vip: str) -> list[str]:
    """The host's WARNING lines about another claimant of `vip`."""
    text = lab.host(name).log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if "another claimant" in line and vip in line and "WARNING" in line]


def scrape(lab: Lab, name: str, vip: str) -> dict[str, float]:
    resp = lab.host(name).api("GET", "/metrics")
    assert resp.status == 200, resp
    found = {}
    for family in text_string_to_metric_families(resp.body):
        for sample in family.samples:
            if sample.labels.get("ip") == vip:
                found[sample.name] = sample.value
    return found


def document(lab: Lab, name: str, vip_id: str) -> dict[str, Any] | None:
    return lab.ip_object(name, vip_id)["foreign_claim"]


def events(lab: Lab, name: str, vip_id: str) -> list[dict[str, Any]]:
    resp = lab.host(name).api("GET", f"/ips/{vip_id}/events")
    assert resp.status == 200, resp
    return resp.body["events"]


def test_a_rogue_announcement_is_seen_reported_and_the_clients_come_back(clab: Lab, rogue: Rogue) -> None:
    vip = "198.51.100.80/32"
    ids, holder = elect(clab, vip)
    standby = next(name for name in ids if name != holder)
    holder_mac = clab.host(holder).mac
    capture = clab.capture("claims-rogue", bpf="arp")
    try:
        start = time.monotonic()
        rogue.claim(vip, announcements=1)
        _, seen = timed_wait(lambda: claim_lines(clab, holder, vip), 3, 0.05, f"{holder} to warn of the rogue", start=start)
        (line,) = claim_lines(clab, holder, vip)
        assert ROGUE_MAC in line and "announcing again" in line, line
        _, back = timed_wait(lambda: clab.neigh(vip) == holder_mac, 3, 0.05,
                             f"the client's entry for {vip} back at {holder} ({holder_mac})", start=start)
        print(f"rogue GARP: warned after {seen:.3f}s, the client back at the holder after {back:.3f}s")
        # The rogue's announcement reached the client, and the holder's answer came after it.
        address, frames = vip.split("/")[0], capture.packets()
        rogue_at = min(a.time for a in frames if a.sender_mac == ROGUE_MAC and a.is_announcement(address))
        assert [a for a in frames if a.sender_mac == holder_mac and a.is_announcement(address) and a.time > rogue_at]

        claim = document(clab, holder, ids[holder])
        assert claim is not None and (claim["mac"], claim["host"], claim["kind"]) == (ROGUE_MAC, None, "arp-announce")
        assert claim["since"].endswith("Z")
        shown = client(clab, holder, "events", ids[holder])
        assert shown.returncode == 0 and "foreign_claim" in shown.stdout and ROGUE_MAC in shown.stdout, shown
        got = scrape(clab, holder, vip)
        assert (got["link_vip_foreign_claims_total"], got["link_vip_foreign_claim"]) == (1, 1), got
        # The standby has no capture (it does not hold the VIP): it warns of nothing.
        assert claim_lines(clab, standby, vip) == [] and document(clab, standby, ids[standby]) is None

        rogue.leave(vip)
        wait_until(lambda: scrape(clab, holder, vip)["link_vip_foreign_claim"] == 0, 6, 0.1,
                   "the gauge back at 0 once the rogue left")
        assert document(clab, holder, ids[holder]) is None
        assert [e["event"] for e in events(clab, holder, ids[holder]) if e["event"].startswith("foreign")] == [
            "foreign_claim", "foreign_claim_over"]
        assert scrape(clab, holder, vip)["link_vip_foreign_claims_total"] == 1
    finally:
        capture.stop()
        remove(clab, ids)


def test_a_silent_rogue_is_found_by_the_probe(clab: Lab, rogue: Rogue) -> None:
    vip = "198.51.100.81/32"
    ids, holder = elect(clab, vip)
    try:
        rogue.claim(vip, announcements=0)  # bound, says nothing: only our probe makes it answer
        wait_until(lambda: claim_lines(clab, holder, vip), 4, 0.05, f"{holder} to find the silent rogue")
        claim = document(clab, holder, ids[holder])
        assert claim is not None and (claim["mac"], claim["kind"]) == (ROGUE_MAC, "arp-reply"), claim
        assert clab.neigh(vip) == clab.host(holder).mac  # an RFC 5227 probe poisons no cache
    finally:
        rogue.leave(vip)
        remove(clab, ids)


def test_an_ipv6_rogue_advertisement_is_seen_and_the_clients_come_back(clab: Lab, rogue: Rogue) -> None:
    vip = "2001:db8::80/128"
    ids, holder = elect(clab, vip)
    holder_mac = clab.host(holder).mac
    try:
        rogue.claim(vip, announcements=1)
        wait_until(lambda: claim_lines(clab, holder, vip), 3, 0.05, f"{holder} to warn of the rogue's NA")
        claim = document(clab, holder, ids[holder])
        assert claim is not None and (claim["mac"], claim["kind"]) == (ROGUE_MAC, "na"), claim
        wait_until(lambda: clab.neigh(vip) == holder_mac, 3, 0.05, f"the client's entry for {vip} back at {holder}")
        assert scrape(clab, holder, vip)["link_vip_foreign_claim"] == 1
        rogue.leave(vip)
        wait_until(lambda: document(clab, holder, ids[holder]) is None, 6, 0.1, "the claim over once the rogue left")
    finally:
        rogue.leave(vip)
        remove(clab, ids)


def test_a_silent_ipv6_rogue_is_found_by_the_neighbour_solicitation(clab: Lab, rogue: Rogue) -> None:
    vip = "2001:db8::81/128"
    ids, holder = elect(clab, vip)
    try:
        rogue.claim(vip, announcements=0)
        wait_until(lambda: claim_lines(clab, holder, vip), 4, 0.05, f"{holder} to find the silent rogue")
        claim = document(clab, holder, ids[holder])
        assert claim is not None and (claim["mac"], claim["kind"]) == (ROGUE_MAC, "na"), claim
        assert clab.neigh(vip) == clab.host(holder).mac  # the answer was unicast to the holder
    finally:
        rogue.leave(vip)
        remove(clab, ids)


def test_split_brain_over_the_survivor_announces_and_the_clients_follow_it(clab: Lab) -> None:
    vip = "198.51.100.82/32"
    ids, old = elect(clab, vip)
    survivor = next(name for name in ids if name != old)
    survivor_mac = clab.host(survivor).mac
    cut = EtcdCut(clab.host(old), [etcd_address(m) for m in lab_etcd(clab)])
    try:
        with cut:
            wait_until(lambda: sorted(clab.bound(vip)) == sorted(ids), 10, 0.05,
                       f"{survivor} to take the lock and bind while {old} keeps the VIP (activate)")
            # Each sees the other; the survivor holds the lock and fights, the old holder does not.
            wait_until(lambda: claim_lines(clab, survivor, vip) and claim_lines(clab, old, vip), 4, 0.05,
                       "both holders to see each other")
            assert "announcing again" in claim_lines(clab, survivor, vip)[0]
            assert "not fighting" in claim_lines(clab, old, vip)[0]
            assert document(clab, survivor, ids[survivor])["host"] == old  # named by its published MAC
        # Healed: the old holder reads the lock and steps down; the survivor announces at once.
        _, gone = timed_wait(lambda: old not in clab.bound(vip), 5 * LEASE, 0.01, f"{old} to step down")
        stepped_down = time.monotonic()
        _, took = timed_wait(lambda: clab.neigh(vip) == survivor_mac, 1.0, 0.02,
                             f"the client's entry at {survivor} within 1 s of the step-down", start=stepped_down)
        print(f"split brain over: {old} stepped down {gone:.3f}s after the heal; client at {survivor} {took:.3f}s later")
        wait_until(lambda: "stopped answering for the VIP" in clab.host(survivor).log_path.read_text(errors="replace"),
                   2, 0.05, f"{survivor} to notice {old}'s claim end and announce again")
        assert clab.wait_agreement(vip, ids, timeout=5) == survivor
    finally:
        cut.end()
        remove(clab, ids)
