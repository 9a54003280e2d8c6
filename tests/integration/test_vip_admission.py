"""Issue 14 in the lab (real etcd, real netlink, real HTTP): a VIP may not be an address of
the host, of a peer or of etcd (point 10); MAX_VIPS bounds the VIPs (11); webhooks only to
WEBHOOK_ALLOWED_URLS, never a redirect, never the receiver's answer shown (4, 13); a bad state
file stops the agent at start with one line and exit 2 (12)."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.test_binders import SECRET, RECEIVER_PORT, Receiver
from tests.lab import BRIDGE_IP, CLIENT_IP, agent_command, wait_until

pytestmark = pytest.mark.lab

RECEIVER_ORIGIN = f"http://{CLIENT_IP}:{RECEIVER_PORT}"


def error_of(resp) -> str:
    assert isinstance(resp.body, dict) and isinstance(resp.body.get("error"), str), resp
    return resp.body["error"]


# ------------------------------------------------------------------------------ point 10
@pytest.mark.hosts(2)
def test_the_hosts_a_peers_and_etcds_addresses_are_refused_and_nothing_is_touched(lab):
    lab.start_agents()
    h1, h2 = lab.host(1), lab.host(2)
    # h2's API process publishes its addresses on a lease of its own, before any VIP exists.
    wait_until(lambda: "/link/agents/h2" in lab.etcd.keys("/link/agents/"), 10, 0.1, "h2's addresses in etcd")
    assert lab.etcd.lease("/link/agents/h2"), "published without a lease"
    assert set(json.loads(lab.etcd.keys("/link/agents/")["/link/agents/h2"])["addresses"]) >= {h2.ip, "2001:db8::12"}
    before = h1.addresses()
    for vip, words in ((f"{h1.ip}/24", "already an address of this host (on eth1"),
                       ("2001:db8::11/64", "already an address of this host (on eth1"),
                       (f"{h2.ip}/32", "an address of the peer h2"),
                       ("2001:db8::12/128", "an address of the peer h2"),
                       (f"{BRIDGE_IP}/32", "the address of etcd")):
        resp = h1.api("POST", "/ips", {"ip": vip})
        assert resp.status == 409 and words in error_of(resp), (vip, resp)
    assert h1.api("GET", "/ips").body == {"ips": []}  # nothing added: no VIP to DELETE
    assert h1.addresses() == before and h1.has(f"{h1.ip}/24")
    assert h1.agent.worker_titles() == {}

    # A VIP that a peer holds is bound there with link's short lifetime: not one of its addresses.
    vip = "198.51.100.60/32"
    ids = lab.add_vip(vip, [h2])
    wait_until(lambda: lab.bound(vip) == [h2.name], 15, 0.05, "h2 to hold the VIP")
    ids.update(lab.add_vip(vip, [h1]))
    assert lab.wait_agreement(vip, ids) == h2.name
    resp = h2.api("POST", "/ips", {"ip": vip})
    assert resp.status == 409 and "already configured on this host" in error_of(resp)  # its own: a duplicate


# ------------------------------------------------------------------------------ one address, one VIP
@pytest.mark.hosts(2)
def test_an_address_held_under_another_prefix_or_ipv4_mapped_is_refused_and_never_bound_twice(lab):
    lab.start_agents()
    h1, h2 = lab.host(1), lab.host(2)
    ids = lab.add_vip("198.51.100.67/24", [h2])
    wait_until(lambda: lab.bound("198.51.100.67/24") == [h2.name], 15, 0.05, "h2 to hold 198.51.100.67/24")
    assert lab.etcd.get("/link/default/198.51.100.67_24") == "h2"
    # The same address as a /32: its lock would be another key, and h1 would bind it too.
    resp = h1.api("POST", "/ips", {"ip": "198.51.100.67/32"})
    assert resp.status == 409 and "/link/default/198.51.100.67_24, held by h2" in error_of(resp), resp
    # On h2 itself, which has it as a /24.
    resp = h2.api("POST", "/ips", {"ip": "198.51.100.67/32"})
    assert resp.status == 409 and "this agent's VIP 198.51.100.67/24" in error_of(resp), resp
    # An IPv4 address in IPv6 spelling is refused as what it is not: a host's IPv6 address.
    for mapped in ("::ffff:198.51.100.67", "::ffff:127.0.0.1", f"::ffff:{h2.ip}"):
        resp = h1.api("POST", "/ips", {"ip": mapped})
        assert resp.status == 400 and "IPv4-mapped" in error_of(resp), resp
    assert h1.api("GET", "/ips").body == {"ips": []} and h1.agent.worker_titles() == {}
    # The same VIP (same prefix) on both hosts is what link is for.
    ids.update(lab.add_vip("198.51.100.67/24", [h1]))
    assert lab.wait_agreement("198.51.100.67/24", ids) == h2.name
    assert not h1.has("198.51.100.67/24") and not h1.has("198.51.100.67/32")


# ------------------------------------------------------------------------------ point 11
@pytest.mark.hosts(1)
def test_max_vips_refuses_the_third_vip_with_409(lab):
    [agent] = lab.start_agents(MAX_VIPS="2")
    h1 = lab.host(1)
    lab.add_vip("198.51.100.61/32")
    lab.add_vip("198.51.100.62/32")
    resp = h1.api("POST", "/ips", {"ip": "198.51.100.63/32"})
    assert resp.status == 409 and "MAX_VIPS=2" in error_of(resp)
    assert sorted(ip["ip"] for ip in h1.api("GET", "/ips").body["ips"]) == ["198.51.100.61/32", "198.51.100.62/32"]
    assert len(agent.worker_titles()) == 2


# ------------------------------------------------------------------------------ points 4, 13
def hook(path: str, secret: str = SECRET) -> dict:
    return {"ip": "198.51.100.64/32", "binder": "webhook", "webhook": {"url": f"{RECEIVER_ORIGIN}{path}", "secret": secret}}


def binder_error(host, vip_id: str, words: str) -> str:
    def failed() -> str | None:
        status = host.api("GET", f"/ips/{vip_id}").body["ip"]["binder_status"]
        return status["error"] if status["error"] and words in status["error"] else None
    return wait_until(failed, 15, 0.1, f"binder_status.error with {words!r}")


@pytest.mark.hosts(1)
@pytest.mark.lab_timeout(180)
def test_webhooks_only_to_allowed_origins_no_redirect_and_never_the_answer_shown(lab):
    receiver = Receiver(lab)
    h1 = lab.host(1)
    try:
        receiver.start()
        lab.start_agents()
        resp = h1.api("POST", "/ips", hook("/hook"))
        assert resp.status == 400 and f"WEBHOOK_ALLOWED_URLS={RECEIVER_ORIGIN}" in error_of(resp)
        h1.agent.stop()

        lab.start_agents(WEBHOOK_ALLOWED_URLS="https://hooks.example.net")
        resp = h1.api("POST", "/ips", hook("/hook"))
        assert resp.status == 400 and "is not on WEBHOOK_ALLOWED_URLS (https://hooks.example.net:443)" in error_of(resp)
        h1.agent.stop()
        assert receiver.entries() == []

        lab.start_agents(WEBHOOK_ALLOWED_URLS=RECEIVER_ORIGIN)
        resp = h1.api("POST", "/ips", hook("/hook"))
        assert resp.status == 201, resp
        vip_id = resp.body["id"]
        wait_until(lambda: receiver.accepted() == [("h1", "ACTIVATED")], 15, 0.1, "a signed ACTIVATED")
        assert h1.api("DELETE", f"/ips/{vip_id}").status == 204

        # The receiver refuses (401, its reason in the body): the status is shown, not the body.
        wrong = h1.api("POST", "/ips", hook("/hook", secret="not-the-receivers-secret"))
        assert wrong.status == 201, wrong
        error = binder_error(h1, wrong.body["id"], "answered 401")
        assert "bad signature" not in error and "bad signature" in [e["why"] for e in receiver.entries()]
        assert h1.api("DELETE", f"/ips/{wrong.body['id']}").status == 204

        # A redirect is a failure, and is not followed.
        seen = len(receiver.entries())
        redirected = h1.api("POST", "/ips", hook("/redirect"))
        assert redirected.status == 201, redirected
        binder_error(h1, redirected.body["id"], "answered 307: redirects are not followed")
        later = receiver.entries()[seen:]
        assert later and all(e["path"] == "/redirect" for e in later), later  # /hook never asked
        h1.agent.stop()

        # WEBHOOK_ALLOWED_URLS emptied while STATE_DIR kept the VIP: started, but never called.
        seen = len(receiver.entries())
        lab.start_agents()
        binder_error(h1, redirected.body["id"], "is not on WEBHOOK_ALLOWED_URLS (unset)")
        assert len(receiver.entries()) == seen
        assert "it will not be called" in h1.log_path.read_text()
    finally:
        receiver.stop()


# ------------------------------------------------------------------------------ point 12
def run_agent(lab, host, state: object, **env: str) -> subprocess.CompletedProcess:
    """The agent started in the host's namespace on this state file; it must exit by itself."""
    (host.state_dir / "vips.json").write_text(state if isinstance(state, str) else json.dumps(state))
    return subprocess.run(["ip", "netns", "exec", host.ns, *agent_command()], env=lab.agent_env_for(host, env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


VIP_ID = "vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e"


@pytest.mark.hosts(1)
def test_a_bad_state_file_stops_the_agent_with_one_line_and_exit_2(lab):
    h1 = lab.host(1)
    entry = {"id": VIP_ID, "ip": "198.51.100.65/32"}
    for state, words in (({"vips": {}}, "vips must be a list, not a JSON object"),
                         ({"version": 1, "vips": [{**entry, "checks": "abc"}]}, f"vips[0] ({VIP_ID}): checks must be a list"),
                         ({"version": 1, "vips": [{**entry, "ip": "198.51.100.999/32"}]}, f"vips[0] ({VIP_ID}): ip "),
                         ({"version": 1, "vips": [entry, {**entry, "ip": "198.51.100.66/32"}]},
                          f"vips[1] ({VIP_ID}): id is also the id of vips[0]"),
                         ({"version": 1, "vips": [entry, {"id": VIP_ID[:-1] + "f", "ip": "198.51.100.65/24"}]},
                          "ip 198.51.100.65/24 is also the address of vips[0] (198.51.100.65/32)"),
                         ('{"vips": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply")):
        done = run_agent(lab, h1, state)
        assert done.returncode == 2 and done.stdout == "", (state, done)
        assert done.stderr.count("\n") == 1 and words in done.stderr, (state, done.stderr)
    three = [{"id": f"vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4{i}", "ip": f"198.51.100.{70 + i}/32"} for i in range(3)]
    done = run_agent(lab, h1, {"version": 1, "vips": three}, MAX_VIPS="2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "lists 3 VIPs, more than MAX_VIPS=2" in done.stderr
    assert len(json.loads((h1.state_dir / "vips.json").read_text())["vips"]) == 3  # left as it was

    (h1.state_dir / "vips.json").write_text(json.dumps({"version": 1, "vips": []}))  # what the agent writes
    lab.start_agents()
    assert h1.api("GET", "/ips").body == {"ips": []}
