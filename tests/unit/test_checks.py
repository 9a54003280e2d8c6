"""Health check validation, the runners against real local targets, and the fail/success rule."""
import http.server
import socket
import threading

import pytest

from link.checks import CheckError, CheckResult, run_check, validate_checks
from link.worker.fsm import Event
from link.worker.health import HealthJudge


def test_valid_checks_are_normalised():
    checks = validate_checks([
        {"type": "tcp", "host": "198.51.100.20", "port": 5432},
        {"type": "HTTP", "url": "http://198.51.100.20:8080/health"},
        {"type": "EXEC", "command": ["/usr/local/bin/check-db", "--quick"]},
    ])
    assert checks == [
        {"type": "TCP", "host": "198.51.100.20", "port": 5432},
        {"type": "HTTP", "url": "http://198.51.100.20:8080/health", "expect_status": 200},
        {"type": "EXEC", "command": ["/usr/local/bin/check-db", "--quick"]},
    ]
    assert validate_checks(None) == []


@pytest.mark.parametrize("checks,field", [
    ("TCP", "checks must be a list"),
    ([{"type": "UDP"}], "checks[0].type"),
    ([{"type": "TCP", "host": "h", "port": 0}], "checks[0].port"),
    ([{"type": "TCP", "host": "h", "port": 70000}], "checks[0].port"),
    ([{"type": "TCP", "host": "h", "port": "80"}], "checks[0].port"),
    ([{"type": "TCP", "host": "h", "port": True}], "checks[0].port"),
    ([{"type": "TCP", "port": 80}], "checks[0].host"),
    ([{"type": "TCP", "host": "h", "port": 80, "timeout": 3}], "checks[0].timeout"),
    ([{"type": "TCP", "host": "h", "port": 80}, {"type": "HTTP", "url": "ftp://h/"}], "checks[1].url"),
    ([{"type": "HTTP", "url": "http://h/", "expect_status": 99}], "checks[0].expect_status"),
    ([{"type": "EXEC", "command": ["check-db"]}], "checks[0].command[0]"),
    ([{"type": "EXEC", "command": "/bin/true"}], "checks[0].command"),
    ([{"type": "EXEC", "command": []}], "checks[0].command"),
    (["TCP:h:80"], "checks[0]"),
    ([{"type": "TCP", "host": "h\x00", "port": 80}], "checks[0].host"),
    ([{"type": "HTTP", "url": "http://["}], "checks[0].url"),
    ([{"type": "HTTP", "url": "http://h/\nx"}], "checks[0].url"),
    ([{"type": "EXEC", "command": ["/bin/true", "a\x00"]}], "checks[0].command"),
])
def test_invalid_checks_name_the_field(checks, field):
    with pytest.raises(CheckError, match=field.replace("[", r"\[").replace("]", r"\]")):
        validate_checks(checks)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tcp_check_against_a_listening_and_a_closed_port():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert run_check({"type": "TCP", "host": "127.0.0.1", "port": port}, 1.0).ok
    result = run_check({"type": "TCP", "host": "127.0.0.1", "port": _closed_port()}, 1.0)
    assert not result.ok and "TCP 127.0.0.1:" in result.detail


def test_http_check_judges_the_status():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert run_check({"type": "HTTP", "url": base + "/ok", "expect_status": 200}, 1.0).ok
        bad = run_check({"type": "HTTP", "url": base + "/down", "expect_status": 200}, 1.0)
        assert not bad.ok and "status 503" in bad.detail
        assert run_check({"type": "HTTP", "url": base + "/down", "expect_status": 503}, 1.0).ok
    finally:
        server.shutdown()
        server.server_close()


def test_exec_check_exit_status_output_and_timeout(scripts):
    policy = scripts.policy()
    true, fail = scripts.add("true", "exit 0\n"), scripts.add("fail", "echo db down; exit 2\n")
    assert run_check({"type": "EXEC", "command": [true]}, 1.0, policy).ok
    failed = run_check({"type": "EXEC", "command": [fail]}, 1.0, policy)
    assert not failed.ok and "exit 2" in failed.detail and "db down" in failed.detail and not failed.refused
    slow = run_check({"type": "EXEC", "command": [scripts.add("slow", "exec sleep 5\n")]}, 0.2, policy)
    assert not slow.ok and "timed out" in slow.detail
    missing = run_check({"type": "EXEC", "command": [str(scripts.path / "nope")]}, 1.0, policy)
    assert not missing.ok and "does not exist" in missing.refused
    outside = run_check({"type": "EXEC", "command": ["/bin/true"]}, 1.0, policy)
    assert not outside.ok and "is not inside SCRIPTS_DIR" in outside.refused


def result(ok: bool) -> CheckResult:
    return CheckResult(ok, "TCP 198.51.100.20:5432: " + ("connected" if ok else "refused"), 0.0)


def test_judge_fails_after_the_count_and_recovers_on_one_success():
    judge = HealthJudge(fail_count=3)
    assert judge.judge([result(False)])[0] is None
    assert judge.judge([result(False)])[0] is None
    event, reason = judge.judge([result(False)])
    assert event is Event.HEALTH_CHECK_FAIL and "failed 3 times" in reason and "198.51.100.20:5432" in reason
    assert judge.judge([result(False)])[0] is None  # already failing: no repeat
    assert judge.judge([result(True)])[0] is Event.HEALTH_CHECK_SUCCESS
    assert judge.judge([result(True)])[0] is None


def test_judge_all_checks_must_pass():
    judge = HealthJudge(fail_count=1)
    event, reason = judge.judge([CheckResult(False, "TCP a:1: refused", 0), CheckResult(True, "TCP b:2: connected", 0)])
    assert event is Event.HEALTH_CHECK_FAIL and "a:1" in reason


def test_a_success_in_between_resets_the_count():
    judge = HealthJudge(fail_count=2)
    judge.judge([result(False)])
    judge.judge([result(True)])
    assert judge.judge([result(False)])[0] is None


def test_a_vip_without_checks_has_no_health_thread_until_it_gets_some(scripts):
    import threading

    from link.worker.health import HealthMonitor

    woken = threading.Event()
    monitor = HealthMonitor([], 0.05, 1.0, woken.set, scripts.policy())
    monitor.start()
    try:
        assert monitor._thread.ident is None
        monitor.replace([{"type": "EXEC", "command": [scripts.add("true", "exit 0\n")]}], 0.05)
        assert woken.wait(5), "the checks added later never ran"
        results = monitor.take_results()
        assert results and results[0][0].ok
    finally:
        monitor.stop()


def test_a_program_changed_after_it_was_accepted_is_not_run_and_said_once(scripts, caplog):
    import logging
    import os
    import threading
    import time

    from link.worker.health import HealthMonitor

    runs = scripts.out / "runs"
    program = scripts.add("check", f"echo ran >> {runs}\n")
    monitor = HealthMonitor([{"type": "EXEC", "command": [program, "--quick"]}], 0.02, 1.0, threading.Event().set,
                            scripts.policy(), label="198.51.100.50/32")
    rounds: list = []

    def collect(count: int, want) -> list:
        """The next `count` rounds whose only result passes `want` (bounded in time)."""
        got: list = []
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            got += [r[0] for r in monitor.take_results() if want(r[0])]
            time.sleep(0.02)
        assert len(got) >= count, f"only {len(got)} rounds as wanted in 10 s"
        rounds.extend(got)
        return got

    with caplog.at_level(logging.INFO, logger="link.scripts"):
        monitor.start()
        try:
            collect(1, lambda r: r.ok)
            os.chmod(program, 0o777)  # now anyone could change what runs
            collect(1, lambda r: r.refused)
            ran = runs.read_text().count("ran")
            refused = collect(5, lambda r: r.refused)
            assert runs.read_text().count("ran") == ran, "a refused program ran"
            assert all(not r.ok and "writable by group or others (mode 0777)" in r.detail for r in refused)
            os.chmod(program, 0o755)
            collect(1, lambda r: r.ok)
        finally:
            monitor.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "link.scripts"]
    assert said == [f"198.51.100.50/32: EXEC {program} --quick: program refused, not run: {program!r} "
                    "is writable by group or others (mode 0777)",
                    f"198.51.100.50/32: EXEC {program} --quick: program accepted again"]


def test_a_check_failing_the_same_way_is_said_once_while_failing():
    judge = HealthJudge(fail_count=2)
    down = CheckResult(False, "EXEC /x: program refused, not run: '/x' is writable by group or others", 0.0)
    lines = [judge.judge([down])[1] for _ in range(6)]
    assert lines[0].endswith("(1/2)") and "failed 2 times in a row" in lines[1]
    assert lines[2:] == ["", "", "", ""], "a failure that does not change is logged once, not every round"
    assert judge.failures == 6  # still counted each round
    other = CheckResult(False, "EXEC /x: program refused, not run: '/x' does not exist", 0.0)
    assert "does not exist" in judge.judge([other])[1]
    assert judge.judge([CheckResult(True, "EXEC /x: exit 0", 0.0)])[0] is Event.HEALTH_CHECK_SUCCESS
