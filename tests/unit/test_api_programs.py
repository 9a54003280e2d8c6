"""The API refuses programs outside SCRIPTS_DIR (EXEC checks, command binders) with a 400 that
names the field and the rule, on POST /ips and on PATCH; nothing reaches the supervisor.

`check_programs` is tested with the test's own uid as owner (runs as any user); through the app,
whose owner is root as in the agent, only the accepting cases need root (CI runs as root).
"""
from __future__ import annotations

import json
import os

import pytest

from link.api import make_app
from link.api.validation import ApiError, check_programs, parse_add_body, parse_update_body
from tests.unit.api_fakes import FakeSupervisor, wsgi_request
from tests.unit.test_api import JSON_HEADERS, VERSION, add, assert_json_error

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="through the app programs must be root's (CI runs as root)")
VIP = "198.51.100.50/32"


def command(activate: list[str], deactivate: list[str], ensure: list[str] | None = None) -> dict:
    return {"ip": VIP, "binder": "command", "command": {"activate": activate, "deactivate": deactivate, "ensure": ensure}}


def refusal(request: dict, scripts) -> str:
    with pytest.raises(ApiError) as exc:
        check_programs(request, str(scripts.path), owner_uid=scripts.owner_uid)
    assert exc.value.status == 400 and exc.value.payload == {"error": str(exc.value)}
    return str(exc.value)


def test_programs_in_the_directory_pass_with_free_arguments(scripts):
    fip = scripts.add("fip", "exit 0\n")
    request = parse_add_body(json.dumps(
        {**command([fip, "attach", "--any", "$(rm -rf /)"], [fip, "detach"], [fip, "check"]),
         "checks": [{"type": "TCP", "host": "198.51.100.20", "port": 5432}, {"type": "EXEC", "command": [fip, "-c", "x"]}]}).encode())
    check_programs(request, str(scripts.path), owner_uid=scripts.owner_uid)


def test_each_program_is_named_by_its_field_with_the_rule_it_breaks(scripts):
    fip = scripts.add("fip", "exit 0\n")
    open_one = scripts.add("open", "exit 0\n", mode=0o777)
    (scripts.path / "sh").symlink_to("/bin/sh")
    sh = str(scripts.path / "sh")
    message = refusal(command(["/bin/sh", "-c", "id"], [fip]), scripts)
    assert message.startswith("command.activate[0] '/bin/sh' ") and "is not inside SCRIPTS_DIR" in message
    assert refusal(command([fip], [open_one]), scripts).startswith(
        f"command.deactivate[0] {open_one!r} is writable by group or others (mode 0777)")
    assert refusal(command([fip], [fip], [sh]), scripts).startswith(f"command.ensure[0] {sh!r} (resolved to ")
    checks = {"ip": VIP, "checks": [{"type": "EXEC", "command": [fip]}, {"type": "EXEC", "command": ["/tmp/x"]}]}
    assert refusal(checks, scripts).startswith("checks[1].command[0] '/tmp/x' is not inside SCRIPTS_DIR")
    assert refusal(parse_update_body(b'{"healthchecks": [{"type": "EXEC", "command": ["/usr/bin/id"]}]}'),
                   scripts).startswith("checks[0].command[0] '/usr/bin/id' is not inside")


def test_the_app_refuses_programs_outside_its_scripts_dir_and_asks_nothing(scripts):
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION, scripts_dir=str(scripts.path))
    bodies = [
        {"ip": VIP, "checks": [{"type": "EXEC", "command": ["/bin/sh", "-c", "touch /marker"]}]},
        {**command(["/usr/bin/env", "sh"], ["/usr/bin/env", "sh"])},
    ]
    for body in bodies:
        assert_json_error(wsgi_request(app, "POST", "/ips", body, JSON_HEADERS), 400, "[0] '/", "is not inside SCRIPTS_DIR")
    assert sup.requests == []
    created = add(app)
    res = wsgi_request(app, "PATCH", f"/ips/{created['id']}", {"healthchecks": [{"type": "EXEC", "command": ["/usr/bin/id"]}]})
    assert_json_error(res, 400, "checks[0].command[0] '/usr/bin/id' is not inside SCRIPTS_DIR")
    assert [r["op"] for r in sup.requests] == ["add"]  # the update never reached the supervisor


def test_the_default_scripts_dir_is_etc_link_scripts():
    sup = FakeSupervisor()
    res = wsgi_request(make_app(sup, version=VERSION), "POST", "/ips",
                       {"ip": VIP, "checks": [{"type": "EXEC", "command": ["/usr/bin/id"]}]}, JSON_HEADERS)
    assert_json_error(res, 400, "is not inside SCRIPTS_DIR /etc/link/scripts")
    assert sup.requests == []


@needs_root
def test_the_app_passes_programs_of_its_scripts_dir_to_the_supervisor(scripts):
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION, scripts_dir=str(scripts.path))
    check = {"type": "EXEC", "command": [scripts.add("check-db", "exit 0\n"), "--quick"]}
    res = wsgi_request(app, "POST", "/ips", {"ip": VIP, "checks": [check]}, JSON_HEADERS)
    assert res.status == 201, res.body
    fip = scripts.add("fip", "exit 0\n")
    res = wsgi_request(app, "POST", "/ips", command([fip, "attach"], [fip, "detach"]) | {"ip": "198.51.100.51/32"},
                       JSON_HEADERS)
    assert res.status == 201, res.body
    res = wsgi_request(app, "PATCH", f"/ips/{res.json()['id']}", {"healthchecks": [check]})
    assert res.status == 200, res.body
    assert [r["op"] for r in sup.requests] == ["add", "add", "update"]
    assert sup.requests[0]["checks"] == [check] and sup.requests[1]["command"]["activate"] == [fip, "attach"]
