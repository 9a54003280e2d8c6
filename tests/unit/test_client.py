"""link-client against a real waitress server on 127.0.0.1 running the API with a fake supervisor."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any, Iterator

import pytest
import waitress

from link import __version__
from link.api import make_app
from link.client import EXIT_SERVER, EXIT_UNREACHABLE, EXIT_USAGE, main, parse_host
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
def servers() -> Iterator[tuple[Relay, str, str]]:
    """Two API servers on ephemeral 127.0.0.1 ports, without and with basic auth (admin/pw),
    started once per module: stopping waitress takes a second (its poll timeout)."""
    relay = Relay()
    started = []
    for auth in ({}, {"user": "admin", "password": "pw"}):
        server = waitress.create_server(make_app(relay, version="7.7.7", **auth), host="127.0.0.1", port=0, threads=2)
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
    assert f"id:     {vip_id}" in out and "ip:     198.51.100.50/32" in out and "status: BOOTING" in out

    run(capsys, "--host", host, "add", "2001:db8::50")
    code, out, _ = run(capsys, "--host", host, "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "IP", "STATUS", "HOLDER", "WORKER", "SINCE"]
    assert len(lines) == 3 and vip_id in lines[1] and "2001:db8::50/128" in lines[2]
    # Aligned: every column starts at the same offset on every line.
    assert lines[1].index("198.51.100.50/32") == lines[0].index("IP") == lines[2].index("2001:db8::50/128")

    code, out, _ = run(capsys, "--host", host, "get", vip_id)
    assert code == 0 and f"id:     {vip_id}" in out and "worker: RUNNING" in out

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
    assert code == 0 and json.loads(out) == {"version": "7.7.7"}

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
    assert code == 0 and "agent:  7.7.7" in out and f"client: {__version__}" in out


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
     ["--host", "127.0.0.1:notaport", "list"], ["--timeout", "0", "list"]],
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
        [sys.executable, "-m", "link.client", "--host", host, "list", "--json"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ips"][0]["ip"] == "198.51.100.50/32"
    missing = subprocess.run(
        [sys.executable, "-m", "link.client", "--host", host, "get", "vip-00000000-0000-4000-8000-000000000000"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert missing.returncode == EXIT_SERVER and missing.stderr == "link-client: IP not found (HTTP 404)\n"
