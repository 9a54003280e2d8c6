"""A holder goes away in every way we can think of; the VIP must move, and stay unique."""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.integration.test_health import holds_for
from tests.lab import LAB_AGENT_ENV, procs, timed_wait, wait_until
from tests.lab.checks import BoundWatch, ip_list

pytestmark = pytest.mark.lab

VIP = "198.51.100.50/32"
KEEPALIVE = float(LAB_AGENT_ENV["KEEPALIVE_INTERVAL"])


def elect(lab):
    lab.start_agents()
    ids = lab.add_vip(VIP)
    holder = lab.wait_agreement(VIP, ids)
    wait_until(lambda: lab.neigh(VIP) == lab.host(holder).mac, 3, what="the client to learn the holder's MAC")
    return ids, holder


def follows(lab, name):
    mac = lab.host(name).mac
    wait_until(lambda: lab.neigh(VIP) == mac, 2, what=f"the client's neighbour entry to follow {name} ({mac})")


def test_holder_link_down_moves_the_vip(lab):
    ids, old = elect(lab)
    start = time.monotonic()
    lab.host(old).link_down()
    new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]), KEEPALIVE + 1, what="another host to bind the VIP",
                           start=start)
    print(f"link down on {old}: {new} bound {VIP} after {took:.3f}s")
    follows(lab, new)
    assert lab.client_ping(VIP)

    # The cut-off host comes back: it must give the VIP up to the new holder.
    lab.host(old).link_up()
    assert lab.wait_agreement(VIP, ids, timeout=10) == new


def test_killed_agent_vip_leaves_its_interface_as_a_peer_takes_it(lab):
    """SIGKILL of the whole agent (the host stays up): nothing can unbind the VIP, but it was
    bound with a lifetime of one lease, so the kernel removes it about when the peers take
    it over, instead of leaving two hosts answering ARP for it."""
    ids, old = elect(lab)
    host = lab.host(old)
    with BoundWatch(lab, VIP, interval=0.005) as watch:
        start = time.monotonic()
        host.agent.kill()                   # SIGKILL the agent and every process of it
        assert host.has(VIP), "the kernel keeps the address until its lifetime ends"
        _, gone = timed_wait(lambda: not host.has(VIP), KEEPALIVE + 0.5, 0.005,
                             f"{VIP} to leave {old} at the end of its lifetime", start=start)
        new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]), KEEPALIVE + 1, 0.005,
                               "another host to bind the VIP", start=start)
        print(f"SIGKILL of {old}'s agent: its {VIP} gone after {gone:.3f}s, {new} bound it after {took:.3f}s")
        follows(lab, new)
    # The kernel's lifetime timer and etcd's lease-revoke tick (~500 ms) are not in step: an
    # overlap of a few samples is possible, never more than a quarter of a second.
    long_overlaps = [o for o in watch.overlaps() if o[1] - o[0] > 0.25]
    assert not long_overlaps, f"two holders for more than 0.25 s: {watch.history()}"
    del ids[old]
    assert lab.wait_agreement(VIP, ids) == new

    # The host comes back with its STATE_DIR: same VIP, same id, and it stands by.
    host.start_agent()
    host.agent.wait_ready()
    vip_ids = [o["id"] for o in ip_list(host.api("GET", "/ips").body)]
    assert len(vip_ids) == 1
    ids[old] = vip_ids[0]
    assert lab.wait_agreement(VIP, ids) == new


def test_a_frozen_holder_loses_its_vip_and_does_not_take_it_back_when_thawed(lab):
    """The holder's worker frozen (SIGSTOP) for longer than its lease: a peer takes the VIP and
    the frozen worker's address expires meanwhile. Thawed, its first look at the election
    tells it the VIP moved: its overdue refresh must not bind it again next to the peer's."""
    ids, old = elect(lab)
    host = lab.host(old)
    pid = lab.ip_object(old, ids[old])["worker"]["pid"]
    with BoundWatch(lab, VIP, interval=0.005) as watch:
        os.kill(pid, signal.SIGSTOP)
        try:
            new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]), KEEPALIVE + 1.5, 0.01,
                                   "a peer to take the VIP from the frozen holder")
            wait_until(lambda: not host.has(VIP), KEEPALIVE + 0.5, 0.01, f"{VIP} to expire on the frozen {old}")
            print(f"{old}'s worker frozen: {new} bound {VIP} after {took:.3f}s, {old}'s address expired")
        finally:
            os.kill(pid, signal.SIGCONT)
        holds_for(lambda: lab.bound(VIP) == [new], 3 * KEEPALIVE, 0.01, f"only {new} binds {VIP} once {old} is thawed")
    long_overlaps = [o for o in watch.overlaps() if o[1] - o[0] > 0.25]
    assert not long_overlaps, f"two holders for more than 0.25 s: {watch.history()}"
    assert lab.wait_agreement(VIP, ids) == new


def test_sigterm_hands_the_vip_over_within_a_second(lab):
    ids, old = elect(lab)
    agent = lab.host(old).agent
    with BoundWatch(lab, VIP) as watch:
        start = time.monotonic()
        os.kill(agent.pid, signal.SIGTERM)
        new, took = timed_wait(lambda: lab.holder(VIP, exclude=[old]), 1.0, what="another host to bind the VIP",
                               start=start)
        print(f"SIGTERM to {old}: {new} bound {VIP} after {took:.3f}s")
        follows(lab, new)
    assert agent.proc.wait(10) == 0
    assert not lab.host(old).has(VIP)
    assert not watch.overlaps(), f"two holders at once: {watch.history()}"
    del ids[old]
    assert lab.wait_agreement(VIP, ids) == new


def test_vip_removed_by_hand_comes_back(lab):
    ids, holder = elect(lab)
    host = lab.host(holder)
    with BoundWatch(lab, VIP) as watch:
        host.del_addr(VIP)
        _, took = timed_wait(lambda: host.has(VIP), 3, what="the worker to bind the VIP again")
        print(f"{VIP} back on {holder} after {took:.3f}s")
        assert lab.wait_agreement(VIP, ids) == holder
    assert not watch.overlaps(), f"two holders at once: {watch.history()}"
    wait_until(lambda: "was removed from eth1 by someone else: bound it again" in host.log_path.read_text(errors="replace"),
               3, what=f"{holder}'s log to say why it bound the VIP again")


def test_killed_worker_is_respawned(lab):
    ids, holder = elect(lab)
    host = lab.host(holder)
    before = lab.ip_object(holder, ids[holder])["worker"]
    pid = before["pid"]
    assert pid in host.agent.tree()[1:], f"worker pid {pid} is not below agent {host.agent.pid}"
    assert procs.title(pid).startswith(f"link: vip {VIP} "), procs.title(pid)
    with BoundWatch(lab, VIP) as watch:
        os.kill(pid, signal.SIGKILL)

        def respawned():
            w = lab.ip_object(holder, ids[holder])["worker"]
            return w if w["pid"] not in (None, pid) and w["state"] == "RUNNING" and procs.alive(w["pid"]) else None
        after, took = timed_wait(respawned, 10, 0.05, "the worker to be respawned")
        print(f"worker {pid} of {holder} respawned as {after['pid']} after {took:.3f}s")
        assert after["restarts"] >= before["restarts"] + 1
        assert procs.title(after["pid"]).startswith(f"link: vip {VIP} ")
        final = lab.wait_agreement(VIP, ids)
    assert not watch.overlaps(), f"two holders at once: {watch.history()}"
    print(f"holder after the respawn: {final} ({watch.history()})")
