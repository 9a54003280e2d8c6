"""Coming from LinK v2, in the lab: its keys as LinK v2.0.7 leaves them when it is stopped, then
`link-agent import-link` (or the agent's first start) and the agent taking its locks over.

LinK v2.0.7's keys (its source: models/etcd_storage.go, models/ip.go, locker/etcd_locker.go,
locker/etcd_lease_manager.go): `/link/hosts/<HOSTNAME>/<id>` = the VIP's JSON, no lease;
`/link/config/<HOSTNAME>` = {"hostname", "lease_id", "data_version": 1}; `/link/ips/<ip with _>
/<HOSTNAME>` = {"updated_at"}, no lease; the lock `/link/default/<ip with _>` = HOSTNAME on the
host's one lease (5 x KEEPALIVE_INTERVAL). Stopped (SIGTERM: LinK has no handler), LinK leaves
its VIPs bound and its locks on a lease nobody refreshes any more.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess

import pytest

from tests.lab import BRIDGE_IP, IFACE, agent_command, http, lock_key, netns, wait_until

pytestmark = pytest.mark.lab

ID_A = "vip-6f1c2b8e-3d4a-4c5b-9e7f-0a1b2c3d4e5f"
ID_B = "vip-0b9d8c7a-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
VIP_A, VIP_B = "198.51.100.60/32", "198.51.100.61/32"
# LinK's lease when it stopped, refreshed by nobody: the agent must start within it. Twice
# LinK's default (5 x 3 s) so that a slow lab machine still starts the agent in time.
LINKV2_LEASE = 30


def go_json(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))  # Go's encoding/json: compact, field order


def stopped_linkv2(lab, host) -> int:
    """What LinK v2.0.7 on `host`, holding VIP_A (a TCP check of its own API, 5 s interval) and VIP_B, leaves
    behind when it is stopped; its host lease."""
    lease = lab.etcd.grant(LINKV2_LEASE)
    lab.etcd.put(f"/link/config/{host.name}", go_json({"hostname": host.name, "lease_id": lease, "data_version": 1}))
    for vip_id, vip, extra in ((ID_A, VIP_A, {"checks": [{"type": "TCP", "host": "127.0.0.1", "port": 1313}]}),
                               (ID_B, VIP_B, {})):
        lab.etcd.put(f"/link/hosts/{host.name}/{vip_id}",
                     go_json({"id": vip_id, "ip": vip, **extra, "healthcheck_interval": 5 if extra else 0}))
        lab.etcd.put(f"/link/ips/{vip.replace('/', '_')}/{host.name}", go_json({"updated_at": "2026-12-03T13:00:00Z"}))
        lab.etcd.put(lock_key(vip), host.name, lease)
        netns.ip(host.ns, "addr", "add", vip, "dev", IFACE)  # LinK binds for ever
    return lease


def linkv2_keys(lab) -> dict[str, str]:
    """The keys LinK v2 on h1 left: its VIP configs, its host config, the locks, its /link/ips entries."""
    keys = lab.etcd.keys("/link/hosts/") | lab.etcd.keys("/link/config/") | lab.etcd.keys("/link/default/")
    return keys | {k: v for k, v in lab.etcd.keys("/link/ips/").items() if k.endswith("/h1")}


def lock_created(lab, vip: str) -> tuple[int, int] | None:
    """(create revision, lease) of the VIP's lock: a lock deleted and taken again, by anyone,
    has a new create revision; one taken over in place keeps it."""
    resp = http.request(lab.bridge_ns, BRIDGE_IP, 2379, "POST", "/v3/kv/range",
                        body={"key": base64.b64encode(lock_key(vip).encode()).decode()}, timeout=2.0)
    kvs = resp.body.get("kvs") or []
    return (int(kvs[0]["create_revision"]), int(kvs[0].get("lease", 0))) if kvs else None


def import_link(lab, host, *args: str) -> subprocess.CompletedProcess:
    """`link-agent import-link` in the host's namespace, with the environment its agent gets."""
    return subprocess.run(["ip", "netns", "exec", host.ns, *agent_command(), "import-link", *args],
                          env=lab.agent_env_for(host, {}), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def assert_taken_over_in_place(lab, created: dict[str, tuple[int, int]], linkv2_lease: int, ids: dict[str, dict]) -> None:
    for vip in (VIP_A, VIP_B):
        assert lab.wait_agreement(vip, ids[vip], timeout=20) == "h1"
        revision, lease = lock_created(lab, vip)
        # Never deleted, so never free: no other host could take it at any moment.
        assert revision == created[vip][0], f"{vip}: the lock was deleted and made again (a failover window)"
        assert lease != linkv2_lease  # now on the worker's own lease


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(180)
def test_import_link_then_the_agent_takes_linkv2s_locks_over_in_place(lab):
    h1, h2 = lab.host(1), lab.host(2)
    linkv2_lease = stopped_linkv2(lab, h1)
    before = linkv2_keys(lab)
    created = {vip: lock_created(lab, vip) for vip in (VIP_A, VIP_B)}
    # h2 runs link for the same VIPs: a standby behind h1's LinK lock.
    lab.start_agents([h2])
    h2_ids = {vip: lab.add_vip(vip, [h2])["h2"] for vip in (VIP_A, VIP_B)}
    for vip in (VIP_A, VIP_B):
        wait_until(lambda vip=vip: lab.ip_object("h2", h2_ids[vip]).get("holder") == "h1", 10, 0.1, f"h2 standby for {vip}")

    done = import_link(lab, h1)
    assert done.returncode == 0 and done.stderr == "", done
    store = h1.state_dir / "vips.json"
    lines = done.stdout.splitlines()
    assert lines == [  # in the order of LinK's keys
        f"link-agent: imported {VIP_B} as {ID_B} (from /link/hosts/h1/{ID_B}); checks: none; every HEALTH_CHECK_INTERVAL",
        f"link-agent: imported {VIP_A} as {ID_A} (from /link/hosts/h1/{ID_A}); checks: TCP 127.0.0.1:1313; every 5s",
        f"link-agent: 2 VIP(s) imported from LinK v2's /link/hosts/h1/ into {store}; 0 already there",
    ], done.stdout
    vips = {v["id"]: v for v in json.loads(store.read_text())["vips"]}
    assert vips[ID_A]["ip"] == VIP_A and vips[ID_A]["checks"] == [{"type": "TCP", "host": "127.0.0.1", "port": 1313}]
    assert vips[ID_A]["healthcheck_interval"] == 5.0 and vips[ID_B]["ip"] == VIP_B and vips[ID_B]["checks"] == []

    again = import_link(lab, h1)
    assert again.returncode == 0 and again.stderr == ""
    assert again.stdout.splitlines()[-1] == "link-agent: nothing new to import: the 2 VIP(s) under /link/hosts/h1/ are already in link's store"
    assert linkv2_keys(lab) == before  # the import reads; it wrote nothing in etcd
    assert {vip: lock_created(lab, vip) for vip in (VIP_A, VIP_B)} == created  # still LinK's lease

    h1.start_agent().wait_ready()
    ids = {vip: {"h1": vip_id, "h2": h2_ids[vip]} for vip, vip_id in ((VIP_A, ID_A), (VIP_B, ID_B))}
    assert_taken_over_in_place(lab, created, linkv2_lease, ids)
    # LinK's own keys are left as they were (a way back), the locks aside.
    after = lab.etcd.keys("/link/hosts/") | lab.etcd.keys("/link/config/")
    assert after == {k: v for k, v in before.items() if k.startswith(("/link/hosts/", "/link/config/"))}

    # While the agent runs, import-link refuses: one process per STATE_DIR.
    busy = import_link(lab, h1)
    assert busy.returncode == 2 and busy.stdout == ""
    assert busy.stderr == (f"link-agent import-link: STATE_DIR={str(h1.state_dir)!r} is in use by link-agent "
                           f"(pid {h1.agent.pid}): one link-agent (or import-link) at a time per STATE_DIR\n")


@pytest.mark.hosts(2)
@pytest.mark.lab_timeout(180)
def test_the_agents_first_start_imports_linkv2s_vips_and_logs_one_line(lab):
    h1, h2 = lab.host(1), lab.host(2)
    linkv2_lease = stopped_linkv2(lab, h1)
    created = {vip: lock_created(lab, vip) for vip in (VIP_A, VIP_B)}
    assert not os.listdir(h1.state_dir)  # STATE_DIR is empty: a first start

    h1.start_agent().wait_ready()
    log = h1.log_path.read_text()
    lines = [line for line in log.splitlines() if "LinK v2" in line]
    assert len(lines) == 1 and (f"first start: imported 2 VIP(s) from LinK v2's keys under /link/hosts/h1/: "
                                f"{VIP_B} ({ID_B}), {VIP_A} ({ID_A})") in lines[0], lines
    listed = {ip["id"]: ip["ip"] for ip in h1.api("GET", "/ips").body["ips"]}
    assert listed == {ID_A: VIP_A, ID_B: VIP_B}

    lab.start_agents([h2])
    h2_ids = {vip: lab.add_vip(vip, [h2])["h2"] for vip in (VIP_A, VIP_B)}
    ids = {vip: {"h1": vip_id, "h2": h2_ids[vip]} for vip, vip_id in ((VIP_A, ID_A), (VIP_B, ID_B))}
    assert_taken_over_in_place(lab, created, linkv2_lease, ids)
