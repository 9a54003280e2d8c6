"""Binders: validation of their settings, the action runner (backoff, newest desired state
wins), the command binder's programs and environment, the webhook's signed POST."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import os
import stat
import threading
import time

import pytest

from link.api.validation import ApiError, parse_add_body, parse_update_body
from link.config import load
from link.supervisor.records import VipRecord
from link.supervisor.store import VipStore
from link.vocabulary.vip import VipSpec
from link.worker.binders import make_binder
from link.worker.binders.command import CommandBinder
from link.worker.binders.runner import Action, ActionFailed, ActionRunner, backoff_delay
from link.worker.binders.webhook import WebhookBinder, payload, post, signature

VIP = "198.51.100.50/32"
VIP_ID = "vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e"
SECRET = "an-example-secret-0123456789"
FAST = {"base": 0.01, "cap": 0.05}
CONFIG = load({"INTERFACE": "lo", "HOSTNAME": "h1"})


def wait_for(predicate, timeout: float = 5.0, what: str = ""):
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def body(**fields):
    return json.dumps({"ip": VIP, **fields}).encode()


def refused(data: bytes) -> str:
    with pytest.raises(ApiError) as exc:
        parse_add_body(data)
    assert exc.value.status == 400
    return str(exc.value)


# ------------------------------------------------------------------------------- validation
def test_no_binder_given_is_the_arp_binder_as_before():
    assert "binder" not in parse_add_body(body())
    assert parse_add_body(body(binder="arp")) == {"ip": VIP, "binder": "arp"}
    assert parse_add_body(body(binder=None)) == {"ip": VIP, "binder": "arp"}


def test_a_command_binder_gets_its_defaults():
    got = parse_add_body(body(binder="command", command={"activate": ["/etc/link/scripts/fip", "a"], "deactivate": ["/etc/link/scripts/fip"]}))
    assert got["command"] == {"activate": ["/etc/link/scripts/fip", "a"], "deactivate": ["/etc/link/scripts/fip"], "ensure": None,
                              "timeout": 10.0, "ensure_interval": 30.0}
    got = parse_add_body(body(binder="command", command={"activate": ["/etc/link/scripts/fip"], "deactivate": ["/etc/link/scripts/fip"],
                                                         "ensure": ["/etc/link/scripts/fip"], "timeout": 2, "ensure_interval": 5}))
    assert (got["command"]["ensure"], got["command"]["timeout"], got["command"]["ensure_interval"]) == (["/etc/link/scripts/fip"], 2.0, 5.0)


def test_a_webhook_binder_gets_its_default_timeout():
    got = parse_add_body(body(binder="webhook", webhook={"url": "https://198.51.100.100/hook", "secret": SECRET}))
    assert got["webhook"] == {"url": "https://198.51.100.100/hook", "secret": SECRET, "timeout": 5.0}


ACT = ["/etc/link/scripts/fip"]  # the shape only: whether it may run is check_programs' (test_api_programs.py)


@pytest.mark.parametrize("fields, words", [
    ({"binder": "bgp"}, "binder must be one of arp, command, webhook"),
    ({"binder": 3}, "binder must be one of arp, command, webhook, not a JSON number"),
    ({"binder": "command"}, 'command is required with "binder": "command"'),
    ({"binder": "webhook"}, 'webhook is required with "binder": "webhook"'),
    ({"command": {"activate": ACT, "deactivate": ACT}}, 'command is only used with "binder": "command"'),
    ({"binder": "command", "webhook": {"url": "http://198.51.100.100/", "secret": SECRET}, "command": {}},
     'webhook is only used with "binder": "webhook"'),
    ({"binder": "command", "command": []}, "command must be an object"),
    ({"binder": "command", "command": {"activate": ACT}}, "command.deactivate is required"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ACT, "shell": "x"}}, "unknown field command.'shell'"),
    ({"binder": "command", "command": {"activate": "/bin/true", "deactivate": ACT}}, "command.activate must be a non-empty list"),
    ({"binder": "command", "command": {"activate": [], "deactivate": ACT}}, "command.activate must be a non-empty list"),
    ({"binder": "command", "command": {"activate": ["true"], "deactivate": ACT}}, "command.activate[0] must be an absolute path"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ["/bin/true", 3]}}, "command.deactivate[1] must be a non-empty string"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ["/bin/true", "a\0b"]}}, "command.deactivate[1] must be at most"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ACT, "ensure": ["x"]}}, "command.ensure[0] must be an absolute"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ACT, "timeout": 0}}, "command.timeout must be between 0.1 and 600"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ACT, "timeout": "10s"}}, "command.timeout must be a number"),
    ({"binder": "command", "command": {"activate": ACT, "deactivate": ACT, "ensure_interval": 0.5}}, "command.ensure_interval must be between 1"),
    ({"binder": "webhook", "webhook": {"secret": SECRET}}, "webhook.url is required"),
    ({"binder": "webhook", "webhook": {"url": "ftp://198.51.100.100/", "secret": SECRET}}, "webhook.url must be an http:// or https://"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100:99999/", "secret": SECRET}}, "webhook.url is not a valid URL"),
    ({"binder": "webhook", "webhook": {"url": "http://me:pw@198.51.100.100/", "secret": SECRET}}, "webhook.url must not contain a user"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100/ x", "secret": SECRET}}, "webhook.url must be at most"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100/"}}, "webhook.secret is required"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100/", "secret": 12345678901234567}}, "webhook.secret is required"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100/", "secret": "short"}}, "webhook.secret must be 16 to 1024"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100/", "secret": SECRET, "timeout": 61}}, "webhook.timeout must be between"),
    ({"binder": "webhook", "webhook": {"url": "http://198.51.100.100/", "secret": SECRET, "retries": 3}}, "unknown field webhook.'retries'"),
])
def test_bad_binder_settings_are_refused_naming_the_field(fields, words):
    message = refused(body(**fields))
    assert words in message, message


def test_a_bad_secret_is_never_echoed():
    bad = "tooshort\u0007"
    message = refused(body(binder="webhook", webhook={"url": "http://198.51.100.100/", "secret": bad}))
    assert "tooshort" not in message


def test_the_binder_cannot_be_changed_by_an_update():
    for field in ("binder", "command", "webhook"):
        with pytest.raises(ApiError) as exc:
            parse_update_body(json.dumps({field: None}).encode())
        assert exc.value.status == 400 and f"unknown field {field!r}" in str(exc.value)


# ----------------------------------------------------------------------- spec, store, API object
def webhook_spec(**settings) -> VipSpec:
    return VipSpec(id=VIP_ID, ip=VIP, binder="webhook",
                   binder_settings={"url": "http://127.0.0.1:9/hook", "secret": SECRET, "timeout": 5.0, **settings})


def test_an_old_vips_json_still_loads_with_the_arp_binder(tmp_path):
    (tmp_path / "vips.json").write_text(json.dumps({"version": 1, "vips": [
        {"id": VIP_ID, "ip": VIP, "checks": [], "healthcheck_interval": 0.0, "fault_policy": ""}]}))
    [spec] = VipStore(str(tmp_path)).load()
    assert (spec.binder, spec.binder_settings) == ("arp", None)


def test_the_spec_round_trips_and_the_store_is_private(tmp_path):
    command = {"activate": ["/bin/true"], "deactivate": ["/bin/true"], "ensure": None, "timeout": 10.0, "ensure_interval": 30.0}
    other = {**webhook_spec().to_json(), "id": "vip-0d6a7e1c-9b2f-4e3a-8c5d-1f2e3d4c5b6a", "ip": "198.51.100.51/32"}
    specs = [VipSpec(id=VIP_ID, ip=VIP, binder="command", binder_settings=command), VipSpec.from_json(other)]
    store = VipStore(str(tmp_path))
    store.save(specs)
    assert [s.to_json() for s in store.load()] == [s.to_json() for s in specs]
    assert stat.S_IMODE(os.stat(tmp_path / "vips.json").st_mode) == 0o600  # the secret is in it


def test_the_api_object_shows_the_binder_but_never_the_secret():
    shown = VipRecord(spec=webhook_spec(), since=0.0).to_api(CONFIG, 10)
    assert shown["binder"] == "webhook" and shown["webhook"] == {"url": "http://127.0.0.1:9/hook", "secret": "***", "timeout": 5.0}
    assert SECRET not in json.dumps(shown) and SECRET not in repr(webhook_spec())
    assert shown["binder_status"] == {"ok": True, "action": None, "error": None, "attempts": 0, "since": None}
    arp = VipRecord(spec=VipSpec(id=VIP_ID, ip=VIP), since=0.0).to_api(CONFIG, 10)
    assert arp["binder"] == "arp" and "command" not in arp and "webhook" not in arp


# ------------------------------------------------------------------------------------ runner
def test_backoff_doubles_from_half_a_second_to_thirty_with_jitter():
    exact = [backoff_delay(n, rng=lambda a, b: 1.0) for n in range(1, 10)]
    assert exact == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(1, rng=lambda a, b: a) == 0.375 and backoff_delay(1, rng=lambda a, b: b) == 0.625
    assert all(0.375 <= backoff_delay(1) <= 0.625 for _ in range(100))


def test_a_failing_action_is_retried_with_growing_delays_until_it_succeeds():
    times: list[float] = []

    def perform(action: Action, attempt: int) -> None:
        times.append(time.monotonic())
        if attempt < 4:
            raise ActionFailed(f"{action.name} exited 3: boom {attempt}")

    changes = []
    runner = ActionRunner(perform, lambda: changes.append(runner.status()), base=0.04, cap=0.1, rng=lambda a, b: 1.0)
    try:
        runner.submit(Action("activate", "ACTIVATED"))
        wait_for(lambda: runner.status()["ok"] and runner.status()["attempts"] == 4, what="the 4th attempt to succeed")
    finally:
        runner.close(1.0)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert [round(g, 2) >= want for g, want in zip(gaps, (0.04, 0.08, 0.1))] == [True, True, True], gaps
    assert gaps[2] < 0.5  # capped
    failing = [c for c in changes if not c["ok"]]
    assert [c["attempts"] for c in failing] == [1, 2, 3] and failing[-1]["error"] == "activate exited 3: boom 3"
    assert len({c["since"] for c in failing}) == 1  # failing since the first failure
    assert runner.history == [("activate", 1, False), ("activate", 2, False), ("activate", 3, False), ("activate", 4, True)]


def test_newest_desired_state_wins_over_an_activate_still_being_retried():
    def perform(action: Action, attempt: int) -> None:
        if action.name == "activate":
            raise ActionFailed("activate exited 1")

    # A long backoff: the deactivate must not wait for the activate's next retry.
    runner = ActionRunner(perform, base=30.0, cap=30.0, rng=lambda a, b: 1.0)
    try:
        runner.submit(Action("activate", "ACTIVATED"))
        wait_for(lambda: runner.history, what="the first activate")
        started = time.monotonic()
        runner.submit(Action("deactivate", "STANDBY"))
        wait_for(lambda: runner.status()["action"] == "deactivate", what="the deactivate")
        assert time.monotonic() - started < 2.0
        assert runner.status()["ok"] and runner.idle()
    finally:
        runner.close(1.0)
    assert runner.history == [("activate", 1, False), ("deactivate", 1, True)]  # the activate is dropped


def test_a_pending_action_is_replaced_by_a_newer_one():
    release = threading.Event()

    def perform(action: Action, attempt: int) -> None:
        if action.reason == "first":
            release.wait(5)

    runner = ActionRunner(perform, **FAST)
    try:
        runner.submit(Action("activate", "ACTIVATED", "first"))
        wait_for(lambda: not runner.idle() and runner._busy, what="the first activate to run")
        runner.submit(Action("deactivate", "STANDBY", "second"))
        runner.submit(Action("activate", "ACTIVATED", "third"))  # replaces the pending deactivate
        assert not runner.submit_if_idle(Action("ensure", "ACTIVATED"))
        release.set()
        wait_for(lambda: len(runner.history) == 2 and runner.idle(), what="both activates")
    finally:
        runner.close(1.0)
    assert [name for name, _, _ in runner.history] == ["activate", "activate"]


def test_close_gives_the_pending_action_one_attempt_and_no_retries():
    def perform(action: Action, attempt: int) -> None:
        raise ActionFailed(f"{action.name} exited 1")

    runner = ActionRunner(perform, base=30.0, cap=30.0)
    runner.submit(Action("activate", "ACTIVATED"))
    wait_for(lambda: runner.history, what="the activate")
    runner.submit(Action("deactivate", "STANDBY"))
    assert runner.close(2.0)
    assert runner.history == [("activate", 1, False), ("deactivate", 1, False)]


def test_an_unexpected_exception_is_a_failed_attempt_not_a_dead_thread():
    calls = []

    def perform(action: Action, attempt: int) -> None:
        calls.append(attempt)
        if attempt == 1:
            raise KeyError("surprise")

    runner = ActionRunner(perform, **FAST)
    try:
        runner.submit(Action("activate", "ACTIVATED"))
        wait_for(lambda: runner.status()["ok"] and runner.status()["attempts"] == 2, what="the retry")
    finally:
        runner.close(1.0)
    assert calls == [1, 2]


# ----------------------------------------------------------------------------- command binder
def command_binder(tmp_path, scripts, priority: int = 7, **settings) -> CommandBinder:
    """Programs in the test's SCRIPTS_DIR (run as this process); what they write goes to tmp_path."""
    log = tmp_path / "log"
    command = {
        "activate": [scripts.add("act", f'echo "activate $LINK_STATE $LINK_ATTEMPT" >> {log}\nenv > {tmp_path}/env.$LINK_ACTION\n')],
        "deactivate": [scripts.add("deact", f'echo "deactivate $LINK_STATE" >> {log}\n')],
        "ensure": None, "timeout": 5.0, "ensure_interval": 30.0, **settings,
    }
    spec = VipSpec(id=VIP_ID, ip=VIP, binder="command", binder_settings=command, priority=priority)
    return CommandBinder(CONFIG, spec, lambda: None, lambda: priority,
                         base_env={"PATH": "/usr/bin:/bin", "PASSWORD": "api-password", "LANG": "C.UTF-8", "HOME": "/agent-home"},
                         runner_options=FAST, programs=scripts.policy())


def lines(tmp_path) -> list[str]:
    try:
        return (tmp_path / "log").read_text().splitlines()
    except FileNotFoundError:
        return []


def read_env(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_the_command_binder_runs_the_programs_with_the_vip_in_the_environment(tmp_path, scripts):
    binder = command_binder(tmp_path, scripts)
    try:
        binder.activate("elected")
        wait_for(lambda: lines(tmp_path) == ["activate ACTIVATED 1"], what="activate")
        binder.deactivate("FAILING", "health checks fail")
        wait_for(lambda: lines(tmp_path)[1:] == ["deactivate FAILING"], what="deactivate")
    finally:
        binder.close(2.0)
    env = read_env(tmp_path / "env.activate")
    assert {k: v for k, v in env.items() if k.startswith("LINK_")} == {
        "LINK_ACTION": "activate", "LINK_VIP": VIP, "LINK_VIP_ADDRESS": "198.51.100.50", "LINK_VIP_PREFIXLEN": "32",
        "LINK_VIP_FAMILY": "4", "LINK_VIP_ID": VIP_ID, "LINK_HOSTNAME": "h1", "LINK_INTERFACE": "lo",
        "LINK_STATE": "ACTIVATED", "LINK_REASON": "elected", "LINK_PRIORITY": "7", "LINK_ATTEMPT": "1",
    }
    assert env["PATH"] == "/usr/bin:/bin" and "PASSWORD" not in env and env["PWD"] == "/"
    assert env["HOME"] in ("/", os.path.expanduser("~"))  # the script user's home, never the agent's HOME
    assert binder.status()["ok"] and binder.status()["action"] == "deactivate"


def test_a_host_that_never_activated_runs_no_deactivate(tmp_path, scripts):
    binder = command_binder(tmp_path, scripts)
    try:
        binder.deactivate("STANDBY", "demoted")
        binder.deactivate("FAILING", "health")
        assert binder.runner.idle()
    finally:
        binder.close(1.0)
    assert lines(tmp_path) == [] and binder.status()["action"] is None


def test_a_failing_activate_reports_its_exit_and_output_and_is_retried(tmp_path, scripts):
    flag = tmp_path / "ok"
    binder = command_binder(tmp_path, scripts, activate=[scripts.add("fail", f'test -e {flag} && exit 0\necho "no floating IP"; echo "quota" >&2; exit 3\n')])
    try:
        binder.activate("elected")
        status = wait_for(lambda: (s := binder.status())["attempts"] >= 3 and s, what="three attempts")
        assert status["ok"] is False and status["action"] == "activate"
        assert status["error"] == "activate exited 3: no floating IP | quota"
        flag.touch()
        wait_for(lambda: binder.status()["ok"], what="the activate to succeed")
    finally:
        binder.close(1.0)


def test_output_in_an_error_is_cut_at_200_characters(tmp_path, scripts):
    binder = command_binder(tmp_path, scripts, activate=[scripts.add("long", 'printf "%0300d" 0; exit 2\n')])
    try:
        binder.activate("elected")
        status = wait_for(lambda: (s := binder.status())["error"] and s, what="the failure")
    finally:
        binder.close(1.0)
    assert status["error"] == "activate exited 2: " + "0" * 200 + "…"


def test_a_program_that_hangs_is_killed_at_its_timeout(tmp_path, scripts):
    binder = command_binder(tmp_path, scripts, timeout=0.3, activate=[scripts.add("hang", "sleep 30\n")])
    try:
        started = time.monotonic()
        binder.activate("elected")
        status = wait_for(lambda: (s := binder.status())["error"] and s, what="the timeout")
        assert status["error"] == "activate timed out after 0.3s" and time.monotonic() - started < 3
    finally:
        binder.close(1.0)


def test_a_program_that_cannot_start_is_a_failure(tmp_path, scripts):
    broken = scripts.path / "broken"
    broken.write_text("#!/no/such/interpreter\n")
    broken.chmod(0o755)
    binder = command_binder(tmp_path, scripts, activate=[str(broken)])
    try:
        binder.activate("elected")
        status = wait_for(lambda: (s := binder.status())["error"] and s, what="the failure")
    finally:
        binder.close(1.0)
    assert status["error"].startswith(f"activate could not start {broken}: No such file")


def test_a_program_refused_before_its_run_is_a_failed_attempt_and_never_runs(tmp_path, scripts):
    mark = tmp_path / "ran"
    binder = command_binder(tmp_path, scripts, activate=[scripts.add("fip", f"touch {mark}\n"), "attach"])
    os.chmod(scripts.path / "fip", 0o757)  # changed after the VIP was added: anyone could rewrite it
    try:
        binder.activate("elected")
        status = wait_for(lambda: (s := binder.status())["attempts"] >= 2 and s, what="two attempts")
        assert status["ok"] is False and not mark.exists()
        assert status["error"] == (f"activate: program refused, not run: {str(scripts.path / 'fip')!r} "
                                   "is writable by group or others (mode 0757)")
        os.chmod(scripts.path / "fip", 0o755)  # put right: the next retry runs it
        wait_for(lambda: binder.status()["ok"], what="the activate to succeed")
    finally:
        binder.close(1.0)
    assert mark.exists()
    assert ("activate", 1, False) in binder.runner.history and binder.runner.history[-1][2] is True


def test_a_failing_ensure_runs_activate_again(tmp_path, scripts):
    gone = tmp_path / "gone"
    clock = [0.0]
    binder = command_binder(tmp_path, scripts, ensure=[scripts.add("ensure", f"test ! -e {gone}\n")], ensure_interval=10.0)
    binder._clock = lambda: clock[0]
    try:
        binder.activate("elected")
        wait_for(lambda: lines(tmp_path) == ["activate ACTIVATED 1"] and binder.runner.idle(), what="activate")
        binder.ensure()  # not due yet
        assert binder.runner.history == [("activate", 1, True)]
        clock[0] = 11.0
        binder.ensure()
        wait_for(lambda: len(binder.runner.history) == 2 and binder.runner.idle(), what="ensure")
        assert binder.runner.history[-1] == ("ensure", 1, True) and len(lines(tmp_path)) == 1
        gone.touch()  # the VIP went away: ensure fails, activate runs again
        clock[0] = 22.0
        binder.ensure()
        wait_for(lambda: len(lines(tmp_path)) == 2 and binder.runner.idle(), what="activate again")
    finally:
        binder.close(1.0)
    assert binder.runner.history[-2:] == [("ensure", 1, False), ("activate", 1, True)]


def test_make_binder_builds_what_the_spec_asks_for(tmp_path):
    binder = make_binder(CONFIG, webhook_spec(), lambda: None, lambda: 10)
    try:
        assert isinstance(binder, WebhookBinder) and SECRET not in repr(binder)
    finally:
        binder.close(0.5)


# ------------------------------------------------------------------------------------ webhook
def test_the_signature_matches_an_independently_computed_vector():
    body_bytes = b'{"endpoint_id": "vip-1", "ip": "198.51.100.50/32", "status": "ACTIVATED", "hostname": "h1"}'
    assert payload("vip-1", "198.51.100.50/32", "ACTIVATED", "h1") == body_bytes
    # `printf '%s' '1700000000.<body>' | openssl dgst -sha256 -hmac an-example-secret-0123456789`
    expected = "1cabe94858df085c8fc018b9e4f2f0273771a7a089dd980ca5e4a1029d8cef98"
    assert signature(SECRET, "1700000000", body_bytes) == f"sha256={expected}"
    # And by RFC 2104's definition, without the hmac module.
    key = SECRET.encode().ljust(64, b"\0")
    inner = hashlib.sha256(bytes(k ^ 0x36 for k in key) + b"1700000000." + body_bytes).digest()
    assert hashlib.sha256(bytes(k ^ 0x5C for k in key) + inner).hexdigest() == expected


class Receiver:
    """An HTTP server on 127.0.0.1 recording POSTs; answers `status` (and `location` on a 3xx)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.status, self.delay = 200, 0.0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                time.sleep(outer.delay)
                try:
                    self.send_response(outer.status)
                    if 300 <= outer.status < 400:
                        self.send_header("Location", "/elsewhere")
                    self.send_header("Content-Length", "5")
                    self.end_headers()
                    self.wfile.write(b"nope\n")
                except OSError:
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=t"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rec = Receiver()
    yield rec
    rec.close()


def test_post_sends_a_signed_json_body(receiver):
    body_bytes = payload(VIP_ID, VIP, "ACTIVATED", "h1")
    assert post(receiver.url, SECRET, body_bytes, 2.0, now=lambda: 1700000000.5) == 200
    [(path, headers, data)] = receiver.posts
    assert path == "/hook?token=t" and data == body_bytes and headers["content-type"] == "application/json"
    assert headers["x-link-timestamp"] == "1700000000"
    want = hmac.new(SECRET.encode(), b"1700000000." + data, hashlib.sha256).hexdigest()
    assert headers["x-link-signature"] == f"sha256={want}"
    assert json.loads(data) == {"endpoint_id": VIP_ID, "ip": VIP, "status": "ACTIVATED", "hostname": "h1"}


@pytest.mark.parametrize("status, words", [(302, "answered 302: redirects are not followed"), (500, "answered 500"),
                                           (401, "answered 401")])
def test_anything_but_a_2xx_is_a_failure_and_redirects_are_not_followed(receiver, status, words):
    receiver.status = status
    with pytest.raises(ActionFailed) as exc:
        post(receiver.url, SECRET, b"{}", 2.0)
    assert words in str(exc.value) and "token" not in str(exc.value)  # the query is left out
    assert "nope" not in str(exc.value)  # what the receiver answered is never shown (issue 14, point 13)
    assert [p for p, _, _ in receiver.posts] == ["/hook?token=t"]  # /elsewhere never asked


def test_a_slow_receiver_is_a_timeout(receiver):
    receiver.delay = 1.0
    with pytest.raises(ActionFailed) as exc:
        post(receiver.url, SECRET, b"{}", 0.2)
    assert "timed out" in str(exc.value)


def test_the_webhook_binder_tells_each_change_and_retries_failures(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    allowed = load({"INTERFACE": "lo", "HOSTNAME": "h1", "WEBHOOK_ALLOWED_URLS": receiver.url.split("/hook")[0]})
    binder = WebhookBinder(allowed, webhook_spec(url=receiver.url), lambda: None, runner_options=FAST)
    try:
        binder.deactivate("STANDBY", "never activated: nothing sent")
        binder.activate("elected")
        wait_for(lambda: binder.status()["ok"] and binder.status()["action"] == "activate", what="the activate POST")
        receiver.status = 500
        binder.deactivate("FAILING", "health checks fail")
        status = wait_for(lambda: (s := binder.status())["attempts"] >= 2 and s, what="retries")
        assert status["ok"] is False and status["error"].startswith("deactivate (FAILING): POST http://127.0.0.1:")
        receiver.status = 200
        wait_for(lambda: binder.status()["ok"], what="the deactivate to go through")
    finally:
        binder.close(1.0)
    statuses = [json.loads(data)["status"] for _, _, data in receiver.posts]
    assert statuses[0] == "ACTIVATED" and set(statuses[1:]) == {"FAILING"} and len(statuses) >= 3
    assert SECRET not in caplog.text and SECRET not in json.dumps(binder.status())


# ------------------------------------------------------------------- worker and supervisor
def test_the_workers_enter_actions_never_wait_on_a_slow_binder(tmp_path, scripts, monkeypatch):
    from multiprocessing import Pipe

    from link.scripts import ProgramPolicy
    from link.worker import main as worker_main
    from link.worker.fsm import Event, State
    from tests.unit.fake_etcd import FakeEtcd

    monkeypatch.setattr(worker_main, "setproctitle", lambda title: None)
    # The test's SCRIPTS_DIR, its programs run as this process (owned by a non-root developer too).
    monkeypatch.setattr(ProgramPolicy, "from_config", classmethod(lambda cls, config: scripts.policy()))
    command = {"activate": [scripts.add("slow", f"sleep 1\necho activated >> {tmp_path}/log\n")],
               "deactivate": [scripts.add("deact", f"echo deactivated >> {tmp_path}/log\n")],
               "ensure": None, "timeout": 5.0, "ensure_interval": 30.0}
    spec = VipSpec(id=VIP_ID, ip=VIP, binder="command", binder_settings=command)
    ours, theirs = Pipe()
    worker = worker_main.Worker(CONFIG, spec, theirs, etcd=FakeEtcd().client(), clock=time.monotonic,
                                binder=lambda wake, priority: make_binder(CONFIG, spec, wake, priority))
    worker.boot()
    try:
        started = time.monotonic()
        assert worker.fsm.handle(Event.ELECTED, "won the lock") and worker.fsm.state is State.ACTIVATED
        assert time.monotonic() - started < 0.5, "entering ACTIVATED waited on the binder"
        wait_for(lambda: worker.binder.runner._busy, what="the activate to start")
        started = time.monotonic()
        assert worker.fsm.handle(Event.DEMOTED, "lost it")  # while the slow activate still runs
        assert time.monotonic() - started < 0.5, "entering STANDBY waited on the binder"
        worker._report_binder()
        wait_for(lambda: lines(tmp_path) == ["activated", "deactivated"], what="activate then deactivate")
        wait_for(lambda: worker.binder.status()["action"] == "deactivate", what="the deactivate's status")
        worker._report_binder()
        reports = []
        while ours.poll():
            reports.append(ours.recv())
        assert [r["type"] for r in reports] == ["binder", "binder"]
        assert reports[-1]["binder_status"]["action"] == "deactivate" and reports[-1]["binder_status"]["ok"]
    finally:
        worker.binder.close(2.0)


def test_the_supervisor_keeps_the_binder_status_and_builds_the_spec(tmp_path, monkeypatch):
    from tests.unit.test_arbiter import Clock, FakeOps, request
    from link.supervisor import arbiter as arbiter_mod
    from link.supervisor.arbiter import Arbiter

    monkeypatch.setattr(arbiter_mod, "setproctitle", lambda title: None)
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)})
    ops = FakeOps()
    arb = Arbiter(config, VipStore(str(tmp_path)), ops, clock=Clock())
    arb.boot()
    hook = {"url": "http://198.51.100.100:8080/hook", "secret": SECRET, "timeout": 5.0}
    answer = request(arb, ops, "add", ip=VIP, binder="webhook", webhook=hook)
    assert answer["ok"] and answer["result"]["webhook"]["secret"] == "***" and SECRET not in json.dumps(answer)
    pid = ops.spawned[-1][0]
    assert ops.specs[pid].binder == "webhook" and ops.specs[pid].binder_settings == hook  # the worker gets the secret
    assert VipStore(str(tmp_path)).load()[0].binder_settings == hook
    failing = {"ok": False, "action": "activate", "error": "activate (ACTIVATED): POST ... answered 500", "attempts": 3,
               "since": "2026-11-22T01:02:03.456Z"}
    ops.children[pid].send({"type": "binder", "binder_status": failing})
    got = request(arb, ops, "get", vip_id=answer["result"]["id"])["result"]
    assert got["binder_status"] == failing
    ops.children[pid].send({"type": "state", "state": "ACTIVATED", "event": "elected", "since": 1.0, "holder": "h1",
                            "reason": "", "binder_status": {**failing, "ok": True, "error": None, "attempts": 4}})
    got = request(arb, ops, "get", vip_id=answer["result"]["id"])["result"]
    assert got["binder_status"]["ok"] and got["binder_status"]["attempts"] == 4 and got["status"] == "ACTIVATED"
