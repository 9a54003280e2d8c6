"""`link-agent import-link` against keys written as LinK v2.0.7 writes them (fake etcd seam).

LinK v2.0.7's layout, from its source (Scalingo/link at v2.0.7):
- models/etcd_storage.go: `/link/hosts/<HOSTNAME>/<id>` = json.Marshal(models.IP), no lease;
  `/link/config/<HOSTNAME>` = json.Marshal(models.Host); `/link/ips/<ip with _>/<HOSTNAME>` =
  {"updated_at": <time>}, no lease; the status is blanked before every write.
- models/ip.go: IP{id, ip, status omitempty, checks omitempty, healthcheck_interval} (Go
  marshals in field order, compact); models/healthcheck.go: {type, host, port}.
- locker/etcd_locker.go: `/link/default/<ip with _>` = HOSTNAME on the host's lease.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest

from link.agent import import_linkv2 as linkv2_import
from link.agent import state_lock
from link.supervisor.store import VipStore
from link.vocabulary.vip import VipSpec
from tests.unit.fake_etcd import FakeEtcd

ID_A = "vip-6f1c2b8e-3d4a-4c5b-9e7f-0a1b2c3d4e5f"
ID_B = "vip-0b9d8c7a-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
ID_H10 = "vip-11111111-2222-4333-8444-555555555555"


def go_json(value: dict) -> str:
    """As Go's encoding/json writes a struct: compact, fields in declaration order."""
    return json.dumps(value, separators=(",", ":"))


def linkv2_ip(vip_id: str, ip: str, checks: list[dict] | None = None, interval: int = 0) -> str:
    model = {"id": vip_id, "ip": ip}
    if checks:  # `checks,omitempty`
        model["checks"] = checks
    model["healthcheck_interval"] = interval
    return go_json(model)


def linkv2_host(etcd: FakeEtcd, hostname: str, vips: list[tuple[str, str, list[dict] | None, int]]) -> int:
    """Everything a running LinK v2.0.7 keeps for `hostname` holding `vips`; its host lease."""
    lease = etcd.client().grant_lease(15)[0]  # 5 x KEEPALIVE_INTERVAL (3 s)
    etcd.put_raw(f"/link/config/{hostname}", go_json({"hostname": hostname, "lease_id": lease, "data_version": 1}))
    for vip_id, ip, checks, interval in vips:
        storable = ip.replace("/", "_")
        etcd.put_raw(f"/link/hosts/{hostname}/{vip_id}", linkv2_ip(vip_id, ip, checks, interval))
        etcd.put_raw(f"/link/ips/{storable}/{hostname}", go_json({"updated_at": "2026-12-03T13:00:00.123456789Z"}))
        etcd.put_raw(f"/link/default/{storable}", hostname, lease)
    return lease


@pytest.fixture
def etcd() -> FakeEtcd:
    store = FakeEtcd()
    linkv2_host(store, "h1", [
        (ID_A, "198.51.100.60/32", [{"type": "TCP", "host": "198.51.100.20", "port": 5432}], 10),
        (ID_B, "198.51.100.61/32", None, 0),
    ])
    linkv2_host(store, "h10", [(ID_H10, "198.51.100.70/32", None, 0)])  # "h1" is a prefix of "h10"
    linkv2_host(store, "h2", [("vip-22222222-2222-4222-8222-222222222222", "198.51.100.60/32", None, 0)])
    return store


def run(tmp_path, etcd: FakeEtcd, *args: str, **env: str):
    out, err = io.StringIO(), io.StringIO()
    clients = []

    def factory(_config, _deadline):
        clients.append(etcd.client())
        return clients[-1]

    environment = {"HOSTNAME": "h1", "STATE_DIR": str(tmp_path), "ETCD_HOSTS": "http://198.51.100.1:2379", **env}
    code = linkv2_import.run(None, "--dry-run" in args, environment, out=out, err=err, etcd_factory=factory)
    return code, out.getvalue(), err.getvalue(), [call for c in clients for call in c.calls]


def test_this_hosts_vips_are_imported_with_linkv2s_ids_checks_and_interval_and_nothing_in_etcd_changes(tmp_path, etcd):
    before = dict(etcd.keys)
    code, out, err, calls = run(tmp_path, etcd)
    assert code == 0 and err == "", (out, err)
    specs = {s.id: s for s in VipStore(str(tmp_path)).load()}
    assert set(specs) == {ID_A, ID_B}  # LinK's ids kept; h10's and h2's VIPs left out
    assert specs[ID_A].ip == "198.51.100.60/32" and specs[ID_A].healthcheck_interval == 10.0
    assert specs[ID_A].checks == ({"type": "TCP", "host": "198.51.100.20", "port": 5432},)
    assert specs[ID_B].checks == () and specs[ID_B].healthcheck_interval == 0.0 and specs[ID_B].binder == "arp"
    lines = out.splitlines()
    assert f"link-agent: imported 198.51.100.60/32 as {ID_A} (from /link/hosts/h1/{ID_A}); checks: TCP 198.51.100.20:5432; every 10s" in lines
    assert f"link-agent: imported 198.51.100.61/32 as {ID_B} (from /link/hosts/h1/{ID_B}); checks: none; every HEALTH_CHECK_INTERVAL" in lines
    assert any("left out: 1 key(s) of h10" in line for line in lines), out
    assert lines[-1] == f"link-agent: 2 VIP(s) imported from LinK v2's /link/hosts/h1/ into {tmp_path}/vips.json; 0 already there"
    # Read only: the locks, LinK's configs and leases are as they were.
    assert calls == ["get_prefix"] and etcd.keys == before
    assert oct(os.stat(tmp_path / "vips.json").st_mode & 0o777) == "0o600"


def test_a_second_run_imports_nothing_new_and_says_so(tmp_path, etcd):
    assert run(tmp_path, etcd)[0] == 0
    written = (tmp_path / "vips.json").read_bytes()
    code, out, err, _ = run(tmp_path, etcd)
    assert code == 0 and err == ""
    assert f"link-agent: 198.51.100.60/32 (from /link/hosts/h1/{ID_A}) is already in {tmp_path}/vips.json as {ID_A}: left as it is" in out
    assert out.splitlines()[-1] == "link-agent: nothing new to import: the 2 VIP(s) under /link/hosts/h1/ are already in link's store"
    assert (tmp_path / "vips.json").read_bytes() == written


def test_a_vip_already_added_through_links_api_is_left_as_it_is_and_the_others_are_added(tmp_path, etcd):
    mine = VipSpec(id="vip-33333333-3333-4333-8333-333333333333", ip="198.51.100.61/32", priority=5)
    VipStore(str(tmp_path)).save([mine])
    code, out, _, _ = run(tmp_path, etcd)
    assert code == 0 and "1 VIP(s) imported" in out and "1 already there" in out
    kept, added = VipStore(str(tmp_path)).load()
    assert kept == mine and kept.priority == 5 and added.id == ID_A


def test_what_linkv2_never_ran_or_spelled_otherwise_is_said_on_the_vips_line(tmp_path):
    etcd = FakeEtcd()
    linkv2_host(etcd, "h1", [
        ("vip-1", "2001:DB8::5/128", [{"type": "HTTP", "host": "x", "port": 80}, {"type": "TCP", "host": "", "port": 22}], 3),
    ])
    code, out, err, _ = run(tmp_path, etcd)
    assert code == 0, err
    (spec,) = VipStore(str(tmp_path)).load()
    assert spec.ip == "2001:db8::5/128" and spec.id != "vip-1" and spec.id.startswith("vip-")
    assert spec.checks == ({"type": "TCP", "host": "localhost", "port": 22},)
    line = next(line for line in out.splitlines() if "imported 2001:db8::5/128" in line)
    assert 'checks[0] of type "HTTP" left out: LinK v2 never ran it' in line
    assert "checks[1]: empty host (LinK dialled this host) imported as localhost" in line
    assert "LinK spelled it '2001:DB8::5/128': its lock key differs from link's /link/default/2001:db8::5_128" in line
    assert "LinK's id \"vip-1\" is not a vip-<uuid4>: a new id was made" in line


@pytest.mark.parametrize("value, words", [
    ("{not json", "not JSON"),
    (go_json({"id": ID_B, "ip": "198.51.100.61/32", "checks": [{"type": "TCP", "host": "a", "port": 0}],
              "healthcheck_interval": 0}), "checks[0].port must be between 1 and 65535"),
    (go_json({"id": ID_B, "ip": "198.51.100.0/24", "healthcheck_interval": 0}), "network address"),
    (go_json({"id": ID_B, "ip": "198.51.100.61/32", "healthcheck_interval": -5}), "healthcheck_interval must be 0"),
])
def test_one_bad_linkv2_key_writes_nothing_and_names_the_key(tmp_path, etcd, value, words):
    etcd.put_raw(f"/link/hosts/h1/{ID_B}", value)
    code, out, err, _ = run(tmp_path, etcd)
    assert code == 1 and "link-agent: imported" not in out
    first, last = err.splitlines()
    assert first.startswith(f"link-agent import-link: /link/hosts/h1/{ID_B}: ") and words in first, err
    assert last.startswith("link-agent import-link: nothing imported: fix or delete the key(s) above")
    assert not (tmp_path / "vips.json").exists()


def test_etcd_unreachable_is_exit_1_and_nothing_written(tmp_path, etcd):
    etcd.down = True
    code, out, err, _ = run(tmp_path, etcd)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("link-agent import-link: etcd (http://198.51.100.1:2379) did not answer: ")
    assert not (tmp_path / "vips.json").exists()


def test_no_linkv2_key_for_this_host_is_exit_0_and_says_so(tmp_path):
    code, out, err, _ = run(tmp_path, FakeEtcd())
    assert code == 0 and err == ""
    assert out == "link-agent: no LinK v2 VIP for h1 in etcd (no key under /link/hosts/h1/): nothing to import\n"


def test_more_than_max_vips_is_a_configuration_error_and_nothing_written(tmp_path, etcd):
    code, out, err, _ = run(tmp_path, etcd, MAX_VIPS="1")
    assert code == 2 and "store would hold 2 VIPs, more than MAX_VIPS=1" in err
    assert not (tmp_path / "vips.json").exists()


def test_a_dry_run_says_what_it_would_import_and_writes_nothing(tmp_path, etcd):
    code, out, _, _ = run(tmp_path, etcd, "--dry-run")
    assert code == 0 and f"would import 198.51.100.60/32 as {ID_A}" in out and "(dry run: nothing written)" in out
    assert not (tmp_path / "vips.json").exists()


def test_bad_configuration_is_exit_2_in_one_line(tmp_path, etcd):
    code, out, err, _ = run(tmp_path, etcd, ETCD_HOSTS="ftp://x")
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("link-agent import-link: ETCD_HOSTS")


def test_it_refuses_while_an_agent_holds_the_state_dir(tmp_path, etcd):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from link.agent.state_lock import hold; "
                               "hold(sys.argv[1], 'link-agent'); print('held', flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline() == "held\n"
        code, out, err, calls = run(tmp_path, etcd)
        assert code == 2 and out == "" and calls == []
        assert err == (f"link-agent import-link: STATE_DIR={str(tmp_path)!r} is in use by link-agent (pid {holder.pid}): "
                       "one link-agent (or import-link) at a time per STATE_DIR\n")
        assert not (tmp_path / "vips.json").exists()
    finally:
        holder.kill()
        holder.wait(5)
    assert run(tmp_path, etcd)[0] == 0  # the holder's end freed it


def test_the_lock_belongs_to_the_process_and_is_not_inherited_by_a_forked_child(tmp_path):
    fd = state_lock.hold(str(tmp_path), "link-agent")
    try:
        pid = os.fork()
        if pid == 0:  # the child tries to take it: refused, the parent holds it
            try:
                state_lock.hold(str(tmp_path), "child")
                os._exit(3)
            except state_lock.StateDirBusy:
                os._exit(0)
            except BaseException:
                os._exit(4)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        os.close(fd)


# ------------------------------------------------------------------ at the agent's first start
def test_first_start_imports_in_a_child_process_never_in_the_supervisor(tmp_path, etcd, monkeypatch):
    pids = tmp_path / "etcd-opened-by"

    def factory(_config, _deadline):
        with open(pids, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return etcd.client()

    monkeypatch.setattr(linkv2_import, "_grpc_etcd", factory)
    config = linkv2_import.load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path / "state")})
    store = VipStore(config.state_dir)
    store.prepare()
    linkv2_import.import_at_first_start(config, store, timeout=30)
    assert {s.id for s in store.load()} == {ID_A, ID_B}
    opened = pids.read_text().split()
    assert len(opened) == 1 and int(opened[0]) != os.getpid()  # the supervisor opened no etcd client

    # Not the first start any more (a file, even of an emptied list): nothing is read.
    store.save([])
    linkv2_import.import_at_first_start(config, store, timeout=30)
    assert store.load() == [] and len(pids.read_text().split()) == 1


def test_first_start_gives_up_on_a_child_that_hangs(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(linkv2_import, "_first_start", lambda config, store: time.sleep(30) or 0)
    config = linkv2_import.load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)})
    linkv2_import.import_at_first_start(config, VipStore(str(tmp_path)), timeout=0.3)
    assert "was stopped; the agent starts without it" in caplog.text
    assert not (tmp_path / "vips.json").exists()


def test_links_own_per_host_key_is_outside_what_linkv2_lists():
    from link.api.agents_directory import hosts_key

    # LinK v2 lists `/link/hosts/<HOSTNAME>` as a prefix, without the final "/"
    # (models/etcd_storage.go, GetIPs), and panics at start on a value that is not a VIP.
    for ours, theirs in (("h1", "h1"), ("h10", "h1")):
        assert not hosts_key(ours).startswith(f"/link/hosts/{theirs}")
