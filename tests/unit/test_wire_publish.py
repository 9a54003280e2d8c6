"""The wire's peers from etcd: each API process publishes its heartbeat endpoint in /link/agents/<host>
(link.api.agents_directory) and hands the others' to the supervisor (the fake etcd)."""
from __future__ import annotations

import json

import pytest

from link.api.agents_directory import HOSTS_PREFIX, HostsDirectory, wire_endpoint
from link.config import load
from tests.unit.fake_etcd import REFUSED, FakeEtcd


def directory(etcd: FakeEtcd, host: str, address: str, got: list[list[dict]] | None = None, **env: str) -> HostsDirectory:
    config = load({"INTERFACE": "lo", "HOSTNAME": host, **env}, check_interface=False)
    return HostsDirectory(etcd.client(), host, lambda: [address], lambda addresses: wire_endpoint(config, addresses),
                          on_wire_peers=got.append if got is not None else None)


def test_each_host_publishes_its_endpoint_and_reads_the_others() -> None:
    etcd, got = FakeEtcd(), []
    h1 = directory(etcd, "h1", "198.51.100.11", got)
    h2 = directory(etcd, "h2", "198.51.100.12", WIRE_PORT="4000")
    h1.publish_once()
    h2.publish_once()
    assert json.loads(etcd.keys[HOSTS_PREFIX + "h2"].value)["wire"] == {"address": "198.51.100.12", "port": 4000}
    etcd.put_raw(HOSTS_PREFIX + "h9", json.dumps({"addresses": [], "wire": {"address": "198.51.100.99", "port": 1}}))
    h1.share_wire_peers()
    assert got == [[{"address": "198.51.100.12", "port": 4000}]]  # not itself, not a key without a lease
    etcd.fail(REFUSED)
    h1.share_wire_peers()
    assert len(got) == 1  # etcd away: the supervisor keeps the last list


def test_the_endpoint_is_wire_address_else_the_first_ipv4_else_a_global_ipv6() -> None:
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1"}, check_interface=False)
    assert wire_endpoint(config, ["2001:db8::11", "fe80::1", "198.51.100.11"]) == {"address": "198.51.100.11", "port": 1314}
    assert wire_endpoint(config, ["fe80::1", "2001:db8::11"]) == {"address": "2001:db8::11", "port": 1314}
    assert wire_endpoint(config, ["fe80::1"]) is None
    pinned = load({"INTERFACE": "lo", "HOSTNAME": "h1", "WIRE_ADDRESS": "203.0.113.5"}, check_interface=False)
    assert wire_endpoint(pinned, ["198.51.100.11"]) == {"address": "203.0.113.5", "port": 1314}


def test_peers_are_read_every_second_while_the_agents_start_then_every_publication(monkeypatch: pytest.MonkeyPatch) -> None:
    # Agents started together publish within seconds of each other: without WIRE_KEY_FILE, a
    # peer's heartbeats are dropped until its endpoint is read, so the first reads come fast.
    from link.api import agents_directory

    now = [1000.0]
    monkeypatch.setattr(agents_directory.time, "monotonic", lambda: now[0])
    hosts = agents_directory.HostsDirectory(FakeEtcd().client(), "h1", lambda: ["198.51.100.11"])  # started now
    assert hosts.next_wait() == 1.0
    now[0] += agents_directory.STARTING_FOR - 0.5
    assert hosts.next_wait() == 1.0
    now[0] += 1.0
    assert hosts.next_wait() == agents_directory.PUBLISH_EVERY > 1.0
