"""link-client against a real waitress server on 127.0.0.1 running the API with a fake supervisor."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest
import waitress

from link import __version__
from link.api import make_app
from link.cli.link_client import EXIT_SERVER, EXIT_UNREACHABLE, EXIT_USAGE, main, parse_health_check, parse_host
from link.cli.transport import _server_error
from tests.lab.scripts import ScriptsDir, ScriptsDirUnavailable
from tests.unit.api_fakes import FakeSupervisor


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LINK_HOST", "LINK_USER", "LINK_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


class Relay:
    """The `call` of the module's servers: forwards to the current test's fake supervisor."""

    def __init__(self) -> None:
        self.target = FakeSupervisor()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.target(request)


@pytest.fixture(scope="module")
def module_scripts() -> Iterator[ScriptsDir | None]:
    """The servers' SCRIPTS_DIR (None where no directory qualifies: a non-root developer)."""
    try:
        directory = ScriptsDir()
    except ScriptsDirUnavailable:
        yield None
        return
    try:
        yield directory
    finally:
        directory.close()


@pytest.fixture(scope="module")
def servers(module_scripts: ScriptsDir | None) -> Iterator[tuple[Relay, str, str]]:
    """Two API servers on ephemeral 127.0.0.1 ports, without and with basic auth (admin/pw),
    started once per module: stopping waitress takes a second (its poll timeout)."""
    relay = Relay()
    started = []
    scripts_dir = {"scripts_dir": str(module_scripts.path)} if module_scripts else {}
    for auth in ({}, {"user": "admin", "password": "pw"}):
        server = waitress.create_server(make_app(relay, version="7.7.7", **auth, **scripts_dir), host="127.0.0.1", port=0,
                                         threads=2, clear_untrusted_proxy_headers=True)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
    yield relay, *(f"127.0.0.1:{server.effective_port}" for server, _ in started)  # type: ignore[misc]
    for server, thread in started:
        server.close()
        server.task_dispatcher.shutdown()
    for server, thread in started:
        thread.join(5)


@pytest.fixture
def sup(servers: tuple[Relay, str, str]) -> FakeSupervisor:
    servers[0].target = FakeSupervisor()
    return servers[0].target


@pytest.fixture
def host(servers: tuple[Relay, str, str], sup: FakeSupervisor) -> str:
    return servers[1]


@pytest.fixture
def auth_host(servers: tuple[Relay, str, str], sup: FakeSupervisor) -> str:
    return servers[2]


def fields(out: str) -> dict[str, str]:
    """The `key: value` lines of format_ip, as a dict (continuation lines are skipped)."""
    shown = {}
    for line in out.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() and not line.startswith(" "):
            shown[key.strip()] = value.strip()
    return shown


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def closed_port() -> int:
    # Bound and never listened on, then released: connecting to it is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_add_list_get_delete_for_people(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    code, out, err = run(capsys, "--host", host, "list")
    assert (code, err) == (0, "") and "No IP configured" in out

    code, out, err = run(capsys, "--host", host, "add", "198.51.100.50")
    assert code == 0 and err == ""
    [vip_id] = sup.ips
    shown = fields(out)
    assert shown["id"] == vip_id and shown["ip"] == "198.51.100.50/32" and shown["status"] == "BOOTING"
    assert shown["checks"] == "none" and shown["fault policy"] == "activate"

    run(capsys, "--host", host, "add", "2001:db8::50", "--health-check", "TCP:198.51.100.20:5432")
    code, out, _ = run(capsys, "--host", host, "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "IP", "STATUS", "HOLDER", "SINCE", "CHECKS"]
    assert len(lines) == 3 and vip_id in lines[1] and "2001:db8::50/128" in lines[2]
    assert lines[1].rstrip().endswith("-") and lines[2].endswith("TCP 198.51.100.20:5432")
    # Aligned: every column starts at the same offset on every line.
    assert lines[1].index("198.51.100.50/32") == lines[0].index("IP") == lines[2].index("2001:db8::50/128")
    assert lines[1].index("BOOTING") == lines[0].index("STATUS") == lines[2].index("BOOTING")

    code, out, _ = run(capsys, "--host", host, "get", vip_id)
    assert code == 0 and fields(out)["id"] == vip_id and fields(out)["worker"] == "RUNNING"

    code, out, _ = run(capsys, "--host", host, "delete", vip_id)
    assert code == 0 and out.strip() == f"Deleted {vip_id}"
    assert vip_id not in sup.ips


def test_json_output_is_the_agents_json(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    code, out, _ = run(capsys, "--host", host, "--json", "add", "198.51.100.50/32")
    created = json.loads(out)
    assert code == 0 and created == next(iter(sup.ips.values()))

    code, out, _ = run(capsys, "list", "--json", "--host", host)  # options after the command too
    assert code == 0 and json.loads(out) == {"ips": [created]}

    code, out, _ = run(capsys, "--host", host, "get", created["id"], "--json")
    assert code == 0 and json.loads(out) == {"ip": created}

    code, out, _ = run(capsys, "--host", host, "--json", "version")
    assert code == 0 and json.loads(out) == {"client": __version__, "agent": "7.7.7"}

    code, out, _ = run(capsys, "--host", host, "--json", "delete", created["id"])
    assert (code, out) == (0, "")


def test_link_aliases(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    assert run(capsys, "--host", host, "create", "198.51.100.50")[0] == 0
    [vip_id] = sup.ips
    assert run(capsys, "--host", host, "show", vip_id)[0] == 0
    assert run(capsys, "--host", host, "destroy", vip_id)[0] == 0
    assert sup.ips == {}


def test_version_shows_agent_and_client(capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, out, _ = run(capsys, "--host", host, "version")
    assert code == 0 and f"agent:  7.7.7 (http://{host})" in out and f"client: {__version__}" in out


def test_version_of_an_unreachable_agent_still_shows_the_client(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--host", f"127.0.0.1:{closed_port()}", "version")
    assert code == EXIT_UNREACHABLE and out == f"client: {__version__}\n" and "cannot reach the agent" in err


def test_host_as_url_and_from_the_environment(
    capsys: pytest.CaptureFixture[str], host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "--host", f"http://{host}/", "list")[0] == 0
    monkeypatch.setenv("LINK_HOST", host)
    assert run(capsys, "list")[0] == 0
    # --host wins over LINK_HOST.
    assert run(capsys, "--host", f"127.0.0.1:{closed_port()}", "list")[0] == EXIT_UNREACHABLE


def test_not_found_is_a_server_error_on_one_line(capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, out, err = run(capsys, "--host", host, "get", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d")
    assert code == EXIT_SERVER and out == ""
    assert err == "link-client: IP not found (HTTP 404)\n"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["add", "198.51.100.0/24"], ["network address", "HTTP 400"]),
        (["get", "not-an-id"], ["vip-<uuid4>", "HTTP 400"]),
        (["delete", "../version"], ["no such endpoint", "HTTP 404"]),  # never reaches /version
    ],
)
def test_refusals_show_the_agents_error(capsys: pytest.CaptureFixture[str], host: str, argv: list[str], words: list[str]) -> None:
    code, _, err = run(capsys, "--host", host, *argv)
    assert code == EXIT_SERVER and err.count("\n") == 1
    for word in words:
        assert word in err


def test_duplicate_is_a_server_error(capsys: pytest.CaptureFixture[str], host: str) -> None:
    assert run(capsys, "--host", host, "add", "198.51.100.50")[0] == 0
    code, _, err = run(capsys, "--host", host, "add", "198.51.100.50/32")
    assert code == EXIT_SERVER and "already configured" in err and "HTTP 409" in err


def test_unreachable_agent(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code, out, err = run(capsys, "--host", f"127.0.0.1:{port}", "list")
    assert code == EXIT_UNREACHABLE and out == ""
    assert err.count("\n") == 1 and "cannot reach the agent" in err and f"127.0.0.1:{port}" in err


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["add"], ["get"], ["list", "extra"], ["--host", "ftp://127.0.0.1", "list"],
     ["--host", "127.0.0.1:notaport", "list"], ["--timeout", "0", "list"], ["failover"], ["delete"],
     ["add", "198.51.100.50", "--health-check", "UDP:h:53"], ["add", "198.51.100.50", "--health-check", "TCP:h"],
     ["add", "198.51.100.50", "--health-check", "EXEC:check-db"], ["add", "198.51.100.50", "--health-check-interval", "x"],
     ["add", "198.51.100.50", "--health-check-interval", "-1"], ["add", "198.51.100.50", "--fault-policy", "panic"],
     ["set-health-checks", "vip-x"], ["set-health-checks", "vip-x", "--clear", "--health-check", "TCP:h:1"],
     ["version", "extra"]],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == EXIT_USAGE and out == "" and "error" in err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "examples:" in out and "link-client add 198.51.100.50/32" in out and "exit codes" in out


def test_basic_auth(capsys: pytest.CaptureFixture[str], auth_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    host = auth_host
    code, _, err = run(capsys, "--host", host, "list")
    assert code == EXIT_SERVER and err == "link-client: authentication required (HTTP 401)\n"
    assert run(capsys, "--host", host, "--user", "admin", "--password", "nope", "list")[0] == EXIT_SERVER
    assert run(capsys, "--host", host, "--user", "admin", "--password", "pw", "list")[0] == 0
    monkeypatch.setenv("LINK_USER", "admin")
    monkeypatch.setenv("LINK_PASSWORD", "pw")
    assert run(capsys, "--host", host, "list")[0] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost", "http://localhost:1313"),
        ("localhost:1313", "http://localhost:1313"),
        ("192.0.2.10:8080", "http://192.0.2.10:8080"),
        ("[2001:db8::1]:1313", "http://[2001:db8::1]:1313"),
        ("http://192.0.2.10", "http://192.0.2.10:80"),
        ("https://link.example/api/", "https://link.example:443/api"),
    ],
)
def test_parse_host(text: str, expected: str) -> None:
    assert str(parse_host(text)) == expected


def test_the_console_script_as_a_process(host: str, sup: FakeSupervisor) -> None:
    sup.ips["vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d"] = {"id": "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d", "ip": "198.51.100.50/32"}
    done = subprocess.run(
        [sys.executable, "-m", "link.cli.link_client", "--host", host, "list", "--json"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ips"][0]["ip"] == "198.51.100.50/32"
    missing = subprocess.run(
        [sys.executable, "-m", "link.cli.link_client", "--host", host, "get", "vip-00000000-0000-4000-8000-000000000000"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert missing.returncode == EXIT_SERVER and missing.stderr == "link-client: IP not found (HTTP 404)\n"


# --- health checks, settings and failover --------------------------------------------------------

TCP = {"type": "TCP", "host": "198.51.100.20", "port": 5432}


def test_add_with_health_checks_and_settings(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    code, out, err = run(
        capsys, "--host", host, "create", "198.51.100.50",
        "--health-check", "TCP:198.51.100.20:5432",
        "--health-check", "http:204:http://198.51.100.20/ready",
        "--health-check-interval", "2", "--fault-policy", "release",
    )
    assert (code, err) == (0, "")
    checks = [
        TCP,
        {"type": "HTTP", "expect_status": 204, "url": "http://198.51.100.20/ready"},
    ]
    assert sup.requests[-1] == {
        "op": "add", "ip": "198.51.100.50/32", "checks": checks, "healthcheck_interval": 2.0, "fault_policy": "release",
    }
    lines = out.splitlines()
    assert fields(out)["checks"] == "TCP 198.51.100.20:5432"
    assert any(line.strip() == "HTTP http://198.51.100.20/ready (expects 204)" for line in lines)
    assert fields(out)["interval"] == "2 s" and fields(out)["fault policy"] == "release"


@pytest.mark.skipif(os.geteuid() != 0, reason="the API takes only root's programs (CI runs as root)")
def test_add_with_an_exec_check_of_the_scripts_dir(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor,
                                                    module_scripts: ScriptsDir | None) -> None:
    assert module_scripts is not None
    program = module_scripts.add("check-db", "exit 0\n")
    code, out, err = run(capsys, "--host", host, "create", "198.51.100.50",
                         "--health-check", f"EXEC:{program} --quick 'two words'")
    assert (code, err) == (0, "")
    assert sup.requests[-1]["checks"] == [{"type": "EXEC", "command": [program, "--quick", "two words"]}]
    assert fields(out)["checks"] == f"EXEC {program} --quick two words"
    code, out, err = run(capsys, "--host", host, "create", "198.51.100.51", "--health-check", "EXEC:/bin/sh -c id")
    assert code == EXIT_SERVER and "checks[0].command[0] '/bin/sh'" in err and "is not inside SCRIPTS_DIR" in err


def test_add_sends_only_what_was_given(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    # A LinK v2 agent knows nothing of fault_policy: it is not sent unless asked for.
    assert run(capsys, "--host", host, "add", "198.51.100.50")[0] == 0
    assert sup.requests[-1] == {"op": "add", "ip": "198.51.100.50/32"}


def test_add_with_a_check_the_agent_refuses_shows_the_field(capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, out, err = run(capsys, "--host", host, "add", "198.51.100.50", "--health-check", "TCP:198.51.100.20:70000")
    assert code == EXIT_SERVER and out == ""
    assert err == "link-client: checks[0].port must be between 1 and 65535 (HTTP 400)\n"


@pytest.mark.parametrize("name", ["set-health-checks", "update-healthchecks"])
def test_set_health_checks_replaces_them(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor, name: str) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [vip_id] = sup.ips
    code, out, err = run(capsys, "--host", host, name, vip_id, "--health-check", "TCP:[2001:db8::20]:5432")
    assert (code, err) == (0, "")
    sent = {"type": "TCP", "host": "2001:db8::20", "port": 5432}
    assert sup.requests[-1] == {"op": "update", "vip_id": vip_id, "checks": [sent]}
    assert fields(out)["checks"] == "TCP [2001:db8::20]:5432"


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (["--clear"], {"checks": []}),
        (["--health-check-interval", "1.5"], {"healthcheck_interval": 1.5}),
        (["--health-check", "TCP:198.51.100.20:5432", "--health-check-interval", "0"], {"checks": [TCP], "healthcheck_interval": 0.0}),
    ],
)
def test_set_health_checks_options(
    capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor, options: list[str], sent: dict[str, Any]
) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [vip_id] = sup.ips
    code, out, _ = run(capsys, "--host", host, "set-health-checks", vip_id, "--json", *options)
    assert code == 0
    assert sup.requests[-1] == {"op": "update", "vip_id": vip_id, **sent}
    answer = json.loads(out)  # the agent's IP object, as it answered
    assert answer["id"] == vip_id and answer["checks"] == sup.ips[vip_id]["checks"]


def test_set_health_checks_of_an_unknown_ip(capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, _, err = run(capsys, "--host", host, "set-health-checks", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d", "--clear")
    assert code == EXIT_SERVER and err == "link-client: IP not found (HTTP 404)\n"


def test_failover(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [vip_id] = sup.ips
    code, out, err = run(capsys, "--host", host, "failover", vip_id)
    assert (code, err) == (0, "") and out == f"{vip_id}: released by this agent; another host takes it over\n"
    assert sup.requests[-1] == {"op": "failover", "vip_id": vip_id}
    assert run(capsys, "--host", host, "--json", "failover", vip_id)[:2] == (0, "")


def test_events_as_a_table_and_as_json(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [vip_id] = sup.ips
    code, out, err = run(capsys, "--host", host, "events", vip_id)
    assert (code, err) == (0, "") and "No event recorded" in out
    sup.events[vip_id] = [
        {"time": "2026-11-22T01:02:03.456Z", "from": "BOOTING", "to": "STANDBY", "event": "demoted",
         "reason": "h2 holds the lock", "source": "worker"},
        {"time": "2026-11-22T01:02:09.001Z", "from": "STANDBY", "to": "BOOTING", "event": "worker_exited",
         "reason": "worker 1234 exited (worker exited with -9 after 6s); respawning in 0.10s", "source": "supervisor"},
    ]
    code, out, err = run(capsys, "--host", host, "events", vip_id)
    header, first, second = out.splitlines()
    assert (code, err) == (0, "") and header.split() == ["TIME", "FROM", "TO", "EVENT", "REASON"]
    assert first.split()[:4] == ["2026-11-22T01:02:03.456Z", "BOOTING", "STANDBY", "demoted"]
    assert first.endswith("h2 holds the lock") and "worker_exited (supervisor)" in second
    assert sup.requests[-1] == {"op": "events", "vip_id": vip_id}
    code, out, _ = run(capsys, "--host", host, "events", vip_id, "--json")
    assert code == 0 and json.loads(out) == {"events": sup.events[vip_id]}
    code, _, err = run(capsys, "--host", host, "events", "vip-00000000-0000-4000-8000-000000000000")
    assert code == EXIT_SERVER and "IP not found" in err


def test_failover_refused_by_the_agent(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [vip_id] = sup.ips
    sup.failover_errors[vip_id] = "no other host competes for 198.51.100.50/32"
    code, out, err = run(capsys, "--host", host, "failover", vip_id)
    assert code == EXIT_SERVER and out == ""
    assert err == "link-client: no other host competes for 198.51.100.50/32 (HTTP 409)\n"


def test_failover_of_an_unknown_ip(capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, _, err = run(capsys, "--host", host, "failover", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d")
    assert code == EXIT_SERVER and err == "link-client: IP not found (HTTP 404)\n"


@pytest.mark.parametrize(
    "argv",
    [["list"], ["get", "vip-x"], ["show", "vip-x"], ["delete", "vip-x"], ["destroy", "vip-x"], ["failover", "vip-x"],
     ["add", "198.51.100.50"], ["create", "198.51.100.50"], ["set-health-checks", "vip-x", "--clear"],
     ["update-healthchecks", "vip-x", "--clear"], ["events", "vip-x"], ["version"]],
)
def test_every_command_and_alias_exits_4_when_the_agent_is_unreachable(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, "--host", f"127.0.0.1:{closed_port()}", *argv)
    assert code == EXIT_UNREACHABLE and err.count("\n") == 1 and "cannot reach the agent" in err


@pytest.mark.parametrize(
    "command",
    ["list", "add", "create", "get", "show", "set-health-checks", "update-healthchecks", "failover", "delete", "destroy", "version"],
)
def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "examples:\n  link-client " in out and "--host" in out
    if command in ("add", "create", "set-health-checks", "update-healthchecks"):
        assert "TCP:HOST:PORT" in out and "HTTP:URL" in out and "EXEC:/PATH" in out


def test_list_shows_a_worker_in_trouble(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [ip] = sup.ips.values()
    ip["worker"] = {"pid": None, "state": "FATAL", "restarts": 5, "error": "interface eth9 is gone"}
    code, out, _ = run(capsys, "--host", host, "list")
    assert code == 0 and "BOOTING (worker FATAL)" in out.splitlines()[1]
    code, out, _ = run(capsys, "--host", host, "get", ip["id"])
    assert fields(out)["worker"] == "FATAL (5 restarts)" and fields(out)["error"] == "interface eth9 is gone"


def sub_fields(out: str, parent: str) -> dict[str, str]:
    """The indented `key: value` lines under the line `parent:` of format_ip."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(parent + ":"))
    shown = {}
    for line in lines[start + 1:]:
        if not line.startswith("  ") or not line.strip():
            break
        key, _, value = line.strip().partition(":")
        shown[key] = value.strip()
    return shown


def test_get_shows_settings_binder_and_candidates_for_people(capsys: pytest.CaptureFixture[str], host: str,
                                                             sup: FakeSupervisor) -> None:
    run(capsys, "--host", host, "add", "198.51.100.50")
    [ip] = sup.ips.values()
    ip.update({
        "preempt": False, "priority": 7, "binder": "command",
        "command": {"activate": ["/etc/link/scripts/fip", "attach", "two words"], "deactivate": ["/etc/link/scripts/fip", "detach"],
                    "ensure": None, "timeout": 10, "ensure_interval": 30},
        "binder_status": {"ok": False, "action": "activate", "error": "activate exited 3: no such floating IP",
                          "attempts": 4, "since": "2026-11-22T01:02:04Z"},
        "candidates": [{"host": "h1", "priority": 7, "state": "STANDBY"}, {"host": "h2", "priority": 10, "state": "ACTIVATED"}],
        "shiny_new_field": {"enabled": True, "peers": ["h2", "h3"]},
    })
    code, out, err = run(capsys, "--host", host, "get", ip["id"])
    assert (code, err) == (0, "")
    shown = fields(out)
    assert shown["preempt"] == "no" and shown["priority"] == "7" and shown["binder"] == "command"
    assert shown["candidates"] == "h1 (priority 7, STANDBY)"
    assert any(line.strip() == "h2 (priority 10, ACTIVATED)" for line in out.splitlines())
    assert sub_fields(out, "binder") == {
        "activate": "/etc/link/scripts/fip attach 'two words'", "deactivate": "/etc/link/scripts/fip detach",
        "timeout": "10 s", "ensure interval": "30 s",
    }
    assert sub_fields(out, "binder status") == {
        "ok": "no", "action": "activate", "error": "activate exited 3: no such floating IP", "attempts": "4",
        "since": "2026-11-22T01:02:04Z",
    }
    assert sub_fields(out, "shiny new field") == {"enabled": "yes", "peers": "h2, h3"}
    # For people: no JSON anywhere (no braces, brackets, quotes around keys, true/false/null).
    assert not any(token in out for token in ("{", "[", '"', "true", "false", "null", "True", "False", "None")), out

    # --json: the agent's JSON, untouched.
    code, out, _ = run(capsys, "--host", host, "get", ip["id"], "--json")
    assert code == 0 and json.loads(out) == {"ip": ip}


def test_an_arp_vip_reads_yes_and_a_quiet_binder(capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor) -> None:
    code, out, _ = run(capsys, "--host", host, "add", "198.51.100.50")
    assert code == 0 and fields(out)["preempt"] == "yes" and fields(out)["binder"] == "arp"
    assert sub_fields(out, "binder status") == {"ok": "yes", "action": "-", "error": "-", "attempts": "0", "since": "-"}
    assert "{" not in out and "True" not in out


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("TCP:198.51.100.20:5432", TCP),
        ("tcp:db.example:5432", {"type": "TCP", "host": "db.example", "port": 5432}),
        ("TCP:[2001:db8::20]:80", {"type": "TCP", "host": "2001:db8::20", "port": 80}),
        ("TCP:2001:db8::20:80", {"type": "TCP", "host": "2001:db8::20", "port": 80}),
        ("HTTP:http://198.51.100.20:8080/health", {"type": "HTTP", "url": "http://198.51.100.20:8080/health"}),
        ("HTTP:503:https://h/x?y=1", {"type": "HTTP", "expect_status": 503, "url": "https://h/x?y=1"}),
        ("EXEC:/bin/true", {"type": "EXEC", "command": ["/bin/true"]}),
        ("EXEC:/usr/bin/pg_isready -h '198.51.100.20'", {"type": "EXEC", "command": ["/usr/bin/pg_isready", "-h", "198.51.100.20"]}),
    ],
)
def test_parse_health_check(text: str, check: dict[str, Any]) -> None:
    assert parse_health_check(text) == check


@pytest.mark.parametrize(
    "text", ["TCP", "TCP:h", "TCP::80", "TCP:h:http", "UDP:h:53", "HTTP:ftp://h/", "HTTP:h/health", "EXEC:", "EXEC:bin/true", "EXEC:/bin/x 'open"]
)
def test_parse_health_check_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected|quotation"):
        parse_health_check(text)


def test_server_errors_on_one_line_as_link_and_links_agents_word_them() -> None:
    # LinK v2 answers {"msg": ...} on some routes (failover refused, unknown id on delete).
    assert _server_error(400, "Bad Request", {"msg": "IP is not master"}) == "IP is not master (HTTP 400)"
    assert _server_error(502, "Bad Gateway", None) == "the agent answered HTTP 502 Bad Gateway"
    assert _server_error(400, "Bad Request", {"error": "a\x1b[31mb"}) == "a?[31mb (HTTP 400)"


@pytest.mark.parametrize(
    "argv",
    [["list"], ["get", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d"], ["show", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d"],
     ["delete", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d"], ["destroy", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d"],
     ["failover", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d"], ["add", "198.51.100.50"], ["create", "198.51.100.50"],
     ["set-health-checks", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d", "--clear"],
     ["update-healthchecks", "vip-3f7c8a52-5d2e-4b8a-9c1d-2e4f6a8b0c1d", "--clear"]],
)
def test_every_command_and_alias_exits_3_on_an_agent_error(
    capsys: pytest.CaptureFixture[str], host: str, sup: FakeSupervisor, argv: list[str]
) -> None:
    sup.fail_with = ConnectionError("the supervisor is gone")
    code, out, err = run(capsys, "--host", host, *argv)
    assert code == EXIT_SERVER and out == ""
    assert err == "link-client: the link agent's supervisor did not answer: the supervisor is gone (HTTP 503)\n"
