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
from link.api.admission import check_programs
from link.api.validation import ApiError, parse_add_body, parse_update_body
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


# A lone surrogate is valid JSON ("\ud800") but no bytes exec could take: 400 naming the field, never 500.
SURROGATE = "\ud800"


@pytest.mark.parametrize("body,field", [
    ({"ip": VIP, "checks": [{"type": "EXEC", "command": ["/" + SURROGATE]}]}, "checks[0].command[0]"),
    ({"ip": VIP, "checks": [{"type": "EXEC", "command": ["/etc/link/scripts/check", "-x" + SURROGATE]}]},
     "checks[0].command[1]"),
    (command(["/" + SURROGATE], ["/etc/link/scripts/fip"]), "command.activate[0]"),
    (command(["/etc/link/scripts/fip"], ["/etc/link/scripts/fip", SURROGATE]), "command.deactivate[1]"),
    (command(["/etc/link/scripts/fip"], ["/etc/link/scripts/fip"], ["/a/" + SURROGATE + "/b"]), "command.ensure[0]"),
])
def test_strings_exec_cannot_take_are_refused_with_400(body, field):
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION)
    assert_json_error(wsgi_request(app, "POST", "/ips", body, JSON_HEADERS), 400, field, "UTF-8")
    assert sup.requests == []


def test_a_patch_with_a_string_exec_cannot_take_is_refused_with_400():
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION)
    created = add(app)
    res = wsgi_request(app, "PATCH", f"/ips/{created['id']}", {"healthchecks": [{"type": "EXEC", "command": ["/" + SURROGATE]}]})
    assert_json_error(res, 400, "healthchecks[0].command[0]", "UTF-8")
    assert [r["op"] for r in sup.requests] == ["add"]


def test_a_setuid_program_is_refused_naming_the_rule(scripts):
    suid = scripts.add("suid", "exit 0\n", mode=0o4755)
    assert refusal(command([suid], [suid]), scripts).startswith(
        f"command.activate[0] {suid!r} is setuid or setgid (mode 4755)")


def test_a_program_script_user_cannot_run_is_refused_naming_it(scripts):
    from link.security_settings import ScriptUser

    private = scripts.add("private", "exit 0\n", mode=0o700)
    other = ScriptUser("someone", 4242424, 4242424)
    request = {"ip": VIP, "checks": [{"type": "EXEC", "command": [private]}]}
    with pytest.raises(ApiError) as exc:
        check_programs(request, str(scripts.path), owner_uid=scripts.owner_uid, run_as=other)
    assert str(exc.value) == f"checks[0].command[0] {private!r} is not executable by SCRIPT_USER {other} (mode 0700)"


@needs_root
def test_the_app_refuses_a_root_only_program_for_nobody(scripts, monkeypatch):
    monkeypatch.delenv("SCRIPT_USER", raising=False)  # the agent as root: programs run as nobody
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION, scripts_dir=str(scripts.path))
    private = scripts.add("private", "exit 0\n", mode=0o700)
    res = wsgi_request(app, "POST", "/ips", {"ip": VIP, "checks": [{"type": "EXEC", "command": [private]}]}, JSON_HEADERS)
    assert_json_error(res, 400, f"checks[0].command[0] {private!r} is not executable by SCRIPT_USER nobody")
    assert sup.requests == []


@needs_root
def test_the_app_judges_programs_for_the_script_user_it_is_given(scripts, monkeypatch):
    # The agent hands its Config's SCRIPT_USER to the app: that one decides, not the environment.
    from link.security_settings import ScriptUser

    monkeypatch.setenv("SCRIPT_USER", "root")
    private = scripts.add("private", "exit 0\n", mode=0o700)
    body = {"ip": VIP, "checks": [{"type": "EXEC", "command": [private]}]}
    sup = FakeSupervisor()
    someone = ScriptUser("someone", 4242424, 4242424)
    res = wsgi_request(make_app(sup, version=VERSION, scripts_dir=str(scripts.path), script_user=someone),
                       "POST", "/ips", body, JSON_HEADERS)
    assert_json_error(res, 400, f"checks[0].command[0] {private!r} is not executable by SCRIPT_USER {someone}")
    assert sup.requests == []
    root = ScriptUser("root", 0, 0)
    res = wsgi_request(make_app(sup, version=VERSION, scripts_dir=str(scripts.path), script_user=root),
                       "POST", "/ips", body, JSON_HEADERS)
    assert res.status == 201, res
