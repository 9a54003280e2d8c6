"""link-client against real agents in the lab: add, list, get, failover to another host, delete."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.lab import netns, wait_until

pytestmark = pytest.mark.lab

VIP = "198.51.100.65/32"


def client(lab, name, *args):
    """`link-client ARGS` run inside host `name`'s namespace, talking to its own agent."""
    script = Path(sys.executable).parent / "link-client"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "link.cli.link_client"]
    return netns.exec_in(lab.host(name).ns, *argv, *args, timeout=30, check=False)


def test_the_cli_adds_lists_gets_fails_over_and_deletes(lab):
    lab.start_agents(lab.hosts[:2])
    ids = {}
    for name in ("h1", "h2"):
        done = client(lab, name, "add", VIP, "--health-check", "TCP:127.0.0.1:1313", "--json")
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        assert created["ip"] == VIP and created["checks"] == [{"type": "TCP", "host": "127.0.0.1", "port": 1313}]
        ids[name] = created["id"]
    holder = lab.wait_agreement(VIP, ids)
    other = "h2" if holder == "h1" else "h1"

    table = client(lab, holder, "list")
    assert table.returncode == 0 and ids[holder] in table.stdout and "ACTIVATED" in table.stdout
    shown = json.loads(client(lab, holder, "get", ids[holder], "--json").stdout)["ip"]
    assert shown["status"] == "ACTIVATED" and shown["holder"] == holder

    refused = client(lab, other, "failover", ids[other])
    assert refused.returncode == 3 and "does not hold" in refused.stderr
    moved = client(lab, holder, "failover", ids[holder])
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: lab.holder(VIP) == other, 5, what=f"{other} to take the VIP")

    gone = client(lab, holder, "delete", ids[holder])
    assert gone.returncode == 0, gone.stderr
    assert json.loads(client(lab, holder, "list", "--json").stdout) == {"ips": []}
    unknown = client(lab, holder, "get", ids[holder])
    assert unknown.returncode == 3 and "not found" in unknown.stderr
    unreachable = client(lab, holder, "--host", "127.0.0.1:1", "list")
    assert unreachable.returncode == 4
