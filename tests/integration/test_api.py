"""The HTTP API against a real agent: bad input, unknown ids, persistence across restarts."""
from __future__ import annotations

import pytest

from tests.lab.checks import ip_list

pytestmark = pytest.mark.lab

VIP = "198.51.100.50/32"
UNKNOWN = "vip-00000000-0000-4000-8000-000000000000"


def assert_error(resp, status):
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    assert isinstance(resp.body, dict) and isinstance(resp.body.get("error"), str) and resp.body["error"], resp


@pytest.mark.hosts(1)
def test_bad_input_and_unknown_ids(lab):
    (agent,) = lab.start_agents()
    assert_error(agent.api("POST", "/ips", {"ip": "nope"}), 400)
    assert_error(agent.api("POST", "/ips", {"ip": "198.51.100.0/24"}), 400)
    assert_error(agent.api("POST", "/ips", {}), 400)
    assert_error(agent.api("POST", "/ips", raw=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert_error(agent.api("GET", f"/ips/{UNKNOWN}"), 404)
    assert_error(agent.api("DELETE", f"/ips/{UNKNOWN}"), 404)
    assert ip_list(agent.api("GET", "/ips").body) == []


@pytest.mark.hosts(1)
def test_restart_keeps_the_vips(lab):
    host = lab.host(1)
    lab.start_agents()
    ids = lab.add_vip(VIP)
    resp = host.api("GET", f"/ips/{ids['h1']}")
    assert resp.status == 200 and resp.body["ip"]["id"] == ids["h1"] and resp.body["ip"]["ip"] == VIP
    assert lab.wait_agreement(VIP, ids) == "h1"

    assert host.agent.stop() == 0
    assert not host.has(VIP), "a stopped agent must release its VIPs"

    host.start_agent()
    host.agent.wait_ready()
    listed = [(o["id"], o["ip"]) for o in ip_list(host.api("GET", "/ips").body)]
    assert listed == [(ids["h1"], VIP)]
    assert lab.wait_agreement(VIP, ids) == "h1"
