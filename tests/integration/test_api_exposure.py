"""Who can reach the API (issue "Secure by default", point 1 and 5): loopback only without a
password, an explicit opt-in to serve the network without one, every route behind the password."""
from __future__ import annotations

import socket
import subprocess

import pytest

from tests.lab import netns
from tests.lab.lab import AGENT_PORT, agent_command
from tests.lab.waiting import wait_until

pytestmark = pytest.mark.lab

UNKNOWN = "vip-00000000-0000-4000-8000-000000000000"


def from_client(lab, host, method, path, **kw):
    """A request from the client namespace (another machine of the LAN) to the host's address."""
    return host.agent.api(method, path, ns=lab.client_ns, address=host.ip, **kw)


def loopback6_get(ns: str, path: str) -> bytes:
    """GET over ::1 inside `ns`: the status line of the answer."""
    with netns.socket_in(ns, socket.AF_INET6) as sock:
        sock.settimeout(5.0)
        sock.connect(("::1", AGENT_PORT))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(200).split(b"\r\n", 1)[0]


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route the agent's own OpenAPI document lists, ids filled in."""
    from link.api.app import openapi_document

    routes = []
    for path, item in openapi_document()["paths"].items():
        for method in item:
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                routes.append((method.upper(), path.replace("{id}", UNKNOWN).replace("{vip_id}", UNKNOWN)))
    return routes


@pytest.mark.hosts(1)
def test_without_password_the_api_is_loopback_only(lab):
    host = lab.host(1)
    (agent,) = lab.start_agents()
    assert agent.api("GET", "/ips").status == 200
    assert loopback6_get(host.ns, "/version").startswith(b"HTTP/1.1 200")
    # From the LAN nothing listens: the connection is refused, not answered.
    with pytest.raises(ConnectionRefusedError):
        from_client(lab, host, "GET", "/ips", timeout=2.0)
    with pytest.raises(ConnectionRefusedError):
        from_client(lab, host, "POST", "/ips", body={"ip": "198.51.100.50/32"}, timeout=2.0)
    assert host.api("GET", "/ips").body == {"ips": []}


@pytest.mark.hosts(1)
def test_a_network_address_without_password_stops_the_agent(lab):
    host = lab.host(1)
    env = lab.agent_env_for(host, {"BIND_ADDRESS": "0.0.0.0"})
    done = subprocess.run(["ip", "netns", "exec", host.ns, *agent_command()], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "BIND_ADDRESS" in lines[0] and "PASSWORD" in lines[0] and "ALLOW_UNAUTHENTICATED_API" in lines[0]


@pytest.mark.hosts(1)
def test_the_opt_in_serves_the_network_and_warns_once(lab):
    host = lab.host(1)
    lab.start_agents(BIND_ADDRESS="0.0.0.0", ALLOW_UNAUTHENTICATED_API="true")
    assert from_client(lab, host, "GET", "/ips").status == 200
    log = host.log_path.read_text()
    warnings = [line for line in log.splitlines() if "without a password" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], warnings


@pytest.mark.hosts(1)
def test_with_a_password_every_route_needs_it(lab):
    host = lab.host(1)
    (agent,) = lab.start_agents(USER="ops", PASSWORD="correct horse battery")
    routes = every_route() + [("GET", "/no-such-route"), ("POST", "/ips/../etc")]
    assert len(routes) >= 11, routes
    # One refused call per route and per source, so fewer than 20 failures from one address
    # (past that the address is made to wait, 429): without credentials and with wrong ones.
    for i, (method, path) in enumerate(routes):
        body = {"ip": "198.51.100.50/32"} if method in ("POST", "PUT", "PATCH") else None
        headers = {"Authorization": "Basic b3BzOndyb25n"} if i % 2 else {}  # ops:wrong
        for resp in (agent.api(method, path, body, auth=False, headers=headers),
                     from_client(lab, host, method, path, body=body, auth=False, headers=headers)):
            assert resp.status == 401, (method, path, headers, resp)
            assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
            assert resp.headers.get("www-authenticate", "").startswith("Basic"), resp.headers
    # Nothing was added by any of those calls, and the right credentials work from the LAN.
    listed = from_client(lab, host, "GET", "/ips")
    assert listed.status == 200 and listed.body == {"ips": []}
    added = from_client(lab, host, "POST", "/ips", body={"ip": "198.51.100.50/32"})
    assert added.status == 201, added
    wait_until(lambda: host.has("198.51.100.50/32"), 10.0, 0.05, "the VIP bound")
    # The password never shows in the agent's log.
    assert "correct horse battery" not in host.log_path.read_text()
