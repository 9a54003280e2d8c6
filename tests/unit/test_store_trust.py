"""Issue 14, points 11, 12 and 14: the state file is read through the API's validation, the
number of VIPs is bounded, and nothing is done that could not be written first. A real
Arbiter over faked process calls (tests/unit/test_arbiter.py); the disk is faked at the OS
seam (os.replace failing with ENOSPC)."""
from __future__ import annotations

import errno
import json
import os

import pytest

from link.agent import link_agent as agent
from link.config import load
from link.supervisor import store as store_mod
from link.supervisor.store import StoreError, VipStore
from link.vocabulary.vip import VipSpec
from tests.unit.test_arbiter import booted_arbiter, request

VIP_ID = "vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e"
OTHER_ID = "vip-0d6a7e1c-9b2f-4e3a-8c5d-1f2e3d4c5b6a"
SECRET = "an-example-secret-0123456789"


def write(tmp_path, data) -> VipStore:
    (tmp_path / "vips.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return VipStore(str(tmp_path))


def entry(**fields):
    return {"id": VIP_ID, "ip": "198.51.100.50/32", **fields}


# ------------------------------------------------------------------------------ point 12
def test_a_file_written_by_the_current_code_loads_back_the_same(tmp_path, monkeypatch):
    arb, ops, _ = booted_arbiter(tmp_path, monkeypatch)
    tcp = {"type": "TCP", "host": "198.51.100.20", "port": 5432}
    http = {"type": "HTTP", "url": "http://198.51.100.20/health", "expect_status": 204}
    request(arb, ops, "add", ip="198.51.100.50/32", checks=[tcp, http], healthcheck_interval=2.5,
            fault_policy="keep", priority=3, preempt=False)
    request(arb, ops, "add", ip="2001:db8::50/128", binder="command",
            command={"activate": ["/bin/true"], "deactivate": ["/bin/true"], "ensure": None, "timeout": 10.0,
                     "ensure_interval": 30.0})
    request(arb, ops, "add", ip="198.51.100.52/32", binder="webhook",
            webhook={"url": "https://hooks.example.net/x", "secret": SECRET, "timeout": 5.0})
    written = [record.spec.to_json() for record in arb.vips.values()]
    assert [spec.to_json() for spec in VipStore(str(tmp_path)).load()] == written


def test_an_empty_list_is_no_vip_and_no_error(tmp_path):
    assert write(tmp_path, {"version": 1, "vips": []}).load() == []
    assert VipStore(str(tmp_path / "absent")).load() == []  # a first start


@pytest.mark.parametrize("data, words", [
    ({"vips": {}}, "vips must be a list, not a JSON object"),
    ({"version": 1}, "vips must be a list, not a JSON null"),
    ([], "a JSON object {\"version\": 1, \"vips\": [...]} was expected, not a JSON array"),
    ({"version": 2, "vips": []}, "version 2 is not 1"),
    ({"version": 1, "vips": [], "ips": []}, "unknown field 'ips'"),
    ({"vips": ["x"]}, "vips[0] must be a JSON object, not a JSON string"),
    ({"vips": [entry(checks="abc")]}, f"vips[0] ({VIP_ID}): checks must be a list of checks"),
    ({"vips": [entry(ip="not-an-ip")]}, f"vips[0] ({VIP_ID}): ip 'not-an-ip' is not an IPv4 or IPv6 address"),
    ({"vips": [entry(ip=5)]}, f"vips[0] ({VIP_ID}): ip must be a string"),
    ({"vips": [{"ip": "198.51.100.50/32"}]}, "vips[0]: id is required"),
    ({"vips": [entry(id="vip-1")]}, "vips[0] (vip-1): 'vip-1' is not an IP id"),
    ({"vips": [entry(priority=300)]}, f"vips[0] ({VIP_ID}): priority must be from 0 to 255"),
    ({"vips": [entry(binder="webhook", webhook={"url": "http://198.51.100.100/"})]},
     f"vips[0] ({VIP_ID}): webhook.secret is required"),
    ({"vips": [entry(), entry(ip="198.51.100.51/32")]}, f"vips[1] ({VIP_ID}): id is also the id of vips[0]"),
    ({"vips": [entry(), entry(id=OTHER_ID)]},
     f"vips[1] ({OTHER_ID}): ip 198.51.100.50/32 is also the address of vips[0] (198.51.100.50/32)"),
    # One address under two prefix lengths: two lock keys, so two hosts could bind it.
    ({"vips": [entry(), entry(id=OTHER_ID, ip="198.51.100.50/24")]},
     f"vips[1] ({OTHER_ID}): ip 198.51.100.50/24 is also the address of vips[0] (198.51.100.50/32)"),
    ({"vips": [entry(ip="2001:db8::50/64"), entry(id=OTHER_ID, ip="2001:DB8:0::50/128")]},
     f"vips[1] ({OTHER_ID}): ip 2001:db8::50/128 is also the address of vips[0] (2001:db8::50/64)"),
])
def test_a_malformed_file_or_entry_is_refused_naming_the_entry_and_the_field(tmp_path, data, words):
    with pytest.raises(StoreError) as exc:
        write(tmp_path, data).load()
    message = str(exc.value)
    assert words in message and "\n" not in message and str(tmp_path / "vips.json") in message


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000,
                                  '{"version": 1, "vips": [' + "[" * 100_000 + "]" * 100_000 + "]}"])
def test_a_file_nested_too_deeply_is_refused_in_one_line_not_a_recursion_error(tmp_path, text):
    with pytest.raises(StoreError) as exc:
        write(tmp_path, text).load()
    assert "nested too deeply" in str(exc.value) and "\n" not in str(exc.value)


def run_agent(tmp_path, monkeypatch, capsys, **env: str) -> tuple[int, str]:
    for name in ("PASSWORD", "BIND_ADDRESS", "WEBHOOK_ALLOWED_URLS", "MAX_VIPS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTERFACE", "lo")
    monkeypatch.setenv("HOSTNAME", "h1")
    monkeypatch.setenv("STATE_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(agent, "_preload", lambda: pytest.fail("the agent went on past a bad state file"))
    code = agent.main([])
    return code, capsys.readouterr().err


def test_the_agent_stops_at_start_on_a_bad_entry_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    write(tmp_path, {"version": 1, "vips": [entry(checks="abc")]})
    code, err = run_agent(tmp_path, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("link-agent: ")
    assert f"vips[0] ({VIP_ID}): checks must be a list of checks" in err


def test_a_deeply_nested_file_stops_the_agent_with_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    write(tmp_path, '{"vips": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, err = run_agent(tmp_path, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "nested too deeply" in err


# ------------------------------------------------------------------------------ point 11
def test_a_file_with_more_vips_than_max_vips_stops_the_agent_never_truncated(tmp_path, monkeypatch, capsys):
    specs = [VipSpec(id=f"vip-0d6a7e1c-9b2f-4e3a-8c5d-1f2e3d4c5b6{i}", ip=f"198.51.100.{50 + i}/32") for i in range(3)]
    VipStore(str(tmp_path)).save(specs)
    code, err = run_agent(tmp_path, monkeypatch, capsys, MAX_VIPS="2")
    assert code == 2 and err.count("\n") == 1 and "lists 3 VIPs, more than MAX_VIPS=2" in err
    assert len(VipStore(str(tmp_path)).load()) == 3  # the file is left as it was


def test_an_add_beyond_max_vips_is_409_naming_max_vips(tmp_path, monkeypatch):
    arb, ops, _ = booted_arbiter(tmp_path, monkeypatch)
    arb.config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path), "MAX_VIPS": "2"})
    assert request(arb, ops, "add", ip="198.51.100.50/32")["ok"]
    assert request(arb, ops, "add", ip="198.51.100.51/32")["ok"]
    answer = request(arb, ops, "add", ip="198.51.100.52/32")
    assert not answer["ok"] and answer["status"] == 409 and "MAX_VIPS=2" in answer["error"]
    assert len(ops.spawned) == 2 and len(arb.store.load()) == 2


# ------------------------------------------------------------------------------ point 14
@pytest.fixture
def full_disk(monkeypatch):
    """The disk fills up: every later write of vips.json fails as os.replace would (ENOSPC)."""
    state = {"full": False}
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(store_mod.os, "replace", replace)
    return state


def test_a_delete_that_cannot_be_written_changes_nothing(tmp_path, monkeypatch, full_disk):
    arb, ops, _ = booted_arbiter(tmp_path, monkeypatch)
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    pid = ops.spawned[-1][0]
    full_disk["full"] = True
    answer = request(arb, ops, "delete", vip_id=vip_id)
    assert not answer["ok"] and answer["status"] == 503 and "No space left" in answer["error"]
    ops.answer_workers()
    assert ops.inbox.get(pid, []) == []  # the worker was never told to stop: the VIP stays bound
    record = arb.vips[vip_id]
    assert record.pid == pid and record.worker_state == "RUNNING" and not record.delete_waiters
    assert [v.id for v in VipStore(str(tmp_path)).load()] == [vip_id]
    full_disk["full"] = False  # and once it can be written, the delete goes through
    ops.api_child.send({"id": 999, "op": "delete", "vip_id": vip_id})
    arb.turn(max_wait=0.05)
    assert ops.order(pid) == {"type": "stop"} and VipStore(str(tmp_path)).load() == []


def test_an_add_or_update_that_cannot_be_written_changes_nothing(tmp_path, monkeypatch, full_disk):
    arb, ops, _ = booted_arbiter(tmp_path, monkeypatch)
    vip_id = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    pid = ops.spawned[-1][0]
    full_disk["full"] = True
    answer = request(arb, ops, "add", ip="198.51.100.51/32")
    assert answer["status"] == 503 and len(ops.spawned) == 1 and list(arb.vips) == [vip_id]
    answer = request(arb, ops, "update", vip_id=vip_id, checks=[{"type": "TCP", "host": "198.51.100.20", "port": 1}])
    assert answer["status"] == 503 and arb.vips[vip_id].spec.checks == ()
    ops.answer_workers()
    assert ops.inbox.get(pid, []) == []  # no new settings sent
    assert [v.to_json() for v in VipStore(str(tmp_path)).load()] == [arb.vips[vip_id].spec.to_json()]


def test_a_delete_under_way_is_not_written_back_by_another_change(tmp_path, monkeypatch):
    arb, ops, _ = booted_arbiter(tmp_path, monkeypatch)
    gone = request(arb, ops, "add", ip="198.51.100.50/32")["result"]["id"]
    ops.api_child.send({"id": 998, "op": "delete", "vip_id": gone})
    arb.turn(max_wait=0.05)  # the worker is told to stop; it has not exited yet
    assert gone in arb.vips and VipStore(str(tmp_path)).load() == []
    request(arb, ops, "add", ip="198.51.100.51/32")
    assert [v.ip for v in VipStore(str(tmp_path)).load()] == ["198.51.100.51/32"]
