"""Notify programs (link.worker.notify): the queue (order, never waiting, a bounded backlog,
the timeout that kills a program's whole group, the stop), the worker's side (which program,
what the results become), the supervisor's events and metrics, the API's refusals (400
naming the field, nothing sent to the supervisor), the settings and link-client's options.

Fakes only at the process seam (the queue's `run`); the timeout and the rule are also tried
with real programs in a SCRIPTS_DIR of the test's own (tests/lab/scripts.py).
"""
from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from link.api import make_app
from link.cli import link_client
from link.config import Config, ConfigError, load
from link.scripts import ProgramPolicy, ScriptRefused
from link.supervisor import observe
from link.supervisor.records import VipRecord
from link.vocabulary.notify_words import RELEASED, NotifyOutcome
from link.vocabulary.protocol import Message, NotifyReport
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import Event, State
from link.worker.fsm import StateMachine
from link.worker.metrics import WorkerMetrics
from link.worker.notify import Notifier, NotifyQueue, Transition
from link.worker.programs import Finished, ProgramTimedOut, RunningProgram
from tests.unit.api_fakes import FakeSupervisor, wsgi_request
from tests.unit.test_api import JSON_HEADERS, VERSION, add, assert_json_error

VIP = "198.51.100.50/32"
VIP_ID = "vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e"
PROGRAM = "/etc/link/scripts/notify"
POLICY = ProgramPolicy("/etc/link/scripts", Config("lo", "h1", ()).script_user)
WAIT = 10.0  # the longest any test waits for the queue's thread (bounded loops, no timing assert)


class FakeRuns:
    """The process seam: records each argv; `hold` keeps a run going until `release()`."""

    def __init__(self, returncode: int = 0, error: Exception | None = None) -> None:
        self.argvs: list[list[str]] = []
        self.envs: list[dict[str, str]] = []
        self.returncode, self.error = returncode, error
        self.started = threading.Semaphore(0)
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, programs: ProgramPolicy, argv: Sequence[str], env: Mapping[str, str], timeout: float,
                 running: RunningProgram) -> Finished:
        self.argvs.append(list(argv))
        self.envs.append(dict(env))
        self.started.release()
        assert self._gate.wait(WAIT), "the test never released the run"
        if self.error is not None:
            raise self.error
        return Finished(self.returncode, b"said something\n" if self.returncode else b"")


def queue(runs: FakeRuns, **options: Any) -> NotifyQueue:
    return NotifyQueue(VIP, VIP_ID, POLICY, 5.0, lambda: None, run=runs, base_env={"PATH": "/usr/bin"}, **options)


def results_of(q: NotifyQueue, count: int) -> list[Any]:
    """The queue's results once there are `count` of them (bounded wait)."""
    found: list[Any] = []
    deadline = time.monotonic() + WAIT
    while len(found) < count and time.monotonic() < deadline:
        found += q.take_results()
        time.sleep(0.01)
    assert len(found) == count, found
    return found


T1 = Transition(State.BOOTING.value, State.STANDBY.value, "another host holds the lock")
T2 = Transition(State.STANDBY.value, State.ACTIVATED.value, "took the free lock")
T3 = Transition(State.ACTIVATED.value, State.FAILING.value, "3 health checks failed")
T4 = Transition(State.FAILING.value, State.STANDBY.value, "health checks pass again")
T5 = Transition(State.STANDBY.value, RELEASED, "stopping: asked by the supervisor")


# ------------------------------------------------------------------------------ the queue
def test_programs_run_in_the_order_of_the_transitions_with_the_four_arguments() -> None:
    runs = FakeRuns()
    q = queue(runs)
    for transition in (T1, T2, T3):
        q.submit((PROGRAM, "--tag", "db"), transition)
    assert [r.outcome for r in results_of(q, 3)] == [NotifyOutcome.OK] * 3
    assert runs.argvs == [[PROGRAM, "--tag", "db", VIP, t.old, t.new, t.reason] for t in (T1, T2, T3)]
    assert runs.envs[0]["LINK_VIP_ID"] == VIP_ID and runs.envs[0]["PATH"] == "/usr/bin"
    q.close(1.0)


def test_submit_never_waits_for_a_running_program() -> None:
    runs = FakeRuns()
    runs.hold()
    q = queue(runs)
    q.submit((PROGRAM,), T1)
    assert runs.started.acquire(timeout=WAIT)
    q.submit((PROGRAM,), T2)  # returns while T1's program still runs (the gate is closed)
    assert not q.idle() and len(runs.argvs) == 1
    runs.release()
    assert [r.transition for r in results_of(q, 2)] == [T1, T2]
    q.close(1.0)


def test_a_backlog_is_bounded_the_oldest_waiting_dropped_and_said() -> None:
    runs = FakeRuns()
    runs.hold()
    q = queue(runs, max_pending=2)
    q.submit((PROGRAM,), T1)
    assert runs.started.acquire(timeout=WAIT)  # T1 runs: T2..T5 wait, 2 at most
    for transition in (T2, T3, T4, T5):
        q.submit((PROGRAM,), transition)
    dropped = q.take_results()
    assert [(r.outcome, r.transition) for r in dropped] == [(NotifyOutcome.DROPPED, T2), (NotifyOutcome.DROPPED, T3)]
    assert "2 transitions were waiting" in dropped[0].detail
    runs.release()
    assert [r.transition for r in results_of(q, 3)] == [T1, T4, T5]
    assert [argv[-3:-1] for argv in runs.argvs] == [[T1.old, T1.new], [T4.old, T4.new], [T5.old, T5.new]]
    q.close(1.0)


@pytest.mark.parametrize("runs,outcome,words", [
    (FakeRuns(returncode=3), NotifyOutcome.FAILED, "exited 3: said something"),
    (FakeRuns(returncode=-9), NotifyOutcome.FAILED, "was killed by signal 9"),
    (FakeRuns(error=ProgramTimedOut("timed out after 5s")), NotifyOutcome.TIMED_OUT, "timed out after 5s: killed"),
    (FakeRuns(error=ScriptRefused("'/x' is not inside SCRIPTS_DIR")), NotifyOutcome.REFUSED, "program refused, not run"),
    (FakeRuns(error=OSError("boom")), NotifyOutcome.FAILED, "OSError: boom"),
])
def test_each_outcome_is_named_with_the_program_and_the_exit(runs: FakeRuns, outcome: NotifyOutcome, words: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    q = queue(runs)
    q.submit((PROGRAM,), T2)
    [result] = results_of(q, 1)
    assert result.outcome is outcome and words in result.detail
    assert result.sentence().startswith(f"notify program {PROGRAM} (STANDBY -> ACTIVATED): ")
    assert f"{VIP}: {result.sentence()}" in caplog.text  # the log says which program and how it ended
    q.submit((PROGRAM,), T3)  # the thread survived
    assert len(results_of(q, 1)) == 1
    q.close(1.0)


def test_close_runs_what_is_queued_then_refuses_more() -> None:
    runs = FakeRuns()
    q = queue(runs)
    q.submit((PROGRAM,), T4)
    q.submit((PROGRAM,), T5)
    q.close(WAIT)
    assert [r.transition for r in q.take_results()] == [T4, T5]
    q.submit((PROGRAM,), T1)
    assert len(runs.argvs) == 2 and q.take_results() == []


def test_close_drops_what_waits_past_its_bound() -> None:
    runs = FakeRuns()
    runs.hold()
    q = queue(runs)
    q.submit((PROGRAM,), T3)
    assert runs.started.acquire(timeout=WAIT)
    q.submit((PROGRAM,), T4)
    closer = threading.Thread(target=q.close, args=(0.2,))
    closer.start()  # T3's program hangs past the bound: nothing else may start
    closer.join(WAIT)
    runs.release()
    found = results_of(q, 2)
    assert [(r.outcome, r.transition) for r in found] in (
        [(NotifyOutcome.DROPPED, T4), (NotifyOutcome.OK, T3)], [(NotifyOutcome.OK, T3), (NotifyOutcome.DROPPED, T4)])
    assert len(runs.argvs) == 1


def test_no_thread_until_a_transition_has_a_program() -> None:
    before = {t.name for t in threading.enumerate()}
    q = queue(FakeRuns())
    assert "notify" not in {t.name for t in threading.enumerate()} - before
    q.close(1.0)


# ------------------------------------------------------------------- real programs (the seam's other side)
def test_a_hung_program_is_killed_with_its_group_at_the_timeout(scripts) -> None:
    marks = scripts.out / "child.pid"
    program = scripts.add("hang", f"sleep 60 &\necho $! > {marks}\nwait\n")
    q = NotifyQueue(VIP, VIP_ID, scripts.policy(), 0.5, lambda: None)
    q.submit((program,), T2)
    [result] = results_of(q, 1)
    assert result.outcome is NotifyOutcome.TIMED_OUT, result
    assert "timed out after 0.5s: killed (its process group)" in result.detail
    child = int(marks.read_text())
    deadline = time.monotonic() + WAIT  # the killed child is reaped by init: bounded wait for it to go
    while Path(f"/proc/{child}").exists() and "zombie" not in _state(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "zombie" in _state(child), "the program's child survived"
    q.close(1.0)


def test_a_program_that_leaves_a_child_in_the_background_ends_when_it_exits(scripts) -> None:
    # keepalived's notify scripts often start a daemon (`... &`): the child keeps the output pipe,
    # and the program must not be counted as running (nor killed) for as long as the child lives.
    marks = scripts.out / "daemon.pid"
    program = scripts.add("starts-daemon", f"sleep 30 &\necho $! > {marks}\necho started\nexit 0\n")
    q = NotifyQueue(VIP, VIP_ID, scripts.policy(), 2.0, lambda: None)
    try:
        q.submit((program,), T2)
        [result] = results_of(q, 1)
        assert result.outcome is NotifyOutcome.OK and "exited 0" in result.detail and "started" in result.detail, result
        daemon = int(marks.read_text())
        assert "zombie" not in _state(daemon), "the background child was killed with the program"
    finally:
        q.close(1.0)
        if marks.exists():
            os.kill(int(marks.read_text()), signal.SIGKILL)  # the test's own child, by PID


def test_a_program_s_output_beyond_a_pipe_s_capacity_does_not_block_it(scripts) -> None:
    program = scripts.add("chatty", "head -c 300000 /dev/zero | tr '\\0' x\necho\necho done >&2\nexit 4\n")
    q = NotifyQueue(VIP, VIP_ID, scripts.policy(), 5.0, lambda: None)
    try:
        q.submit((program,), T2)
        [result] = results_of(q, 1)
        assert result.outcome is NotifyOutcome.FAILED and "exited 4" in result.detail, result
    finally:
        q.close(1.0)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def test_real_programs_get_the_arguments_and_a_refused_one_never_runs(scripts) -> None:
    log = scripts.out / "notify.log"
    program = scripts.add("notify", f'echo "$@" >> {log}\nexit "${{EXIT:-0}}"\n')
    outside = scripts.add("open", f"touch {scripts.out / 'ran'}\n", mode=0o777)  # writable by others: refused
    q = NotifyQueue(VIP, VIP_ID, scripts.policy(), 5.0, lambda: None)
    q.submit((program, "tag"), T2)
    q.submit((outside,), T3)
    ok, refused = results_of(q, 2)
    assert ok.outcome is NotifyOutcome.OK and log.read_text() == f"tag {VIP} STANDBY ACTIVATED took the free lock\n"
    assert refused.outcome is NotifyOutcome.REFUSED and "writable by group or others" in refused.detail
    assert not (scripts.out / "ran").exists()
    q.close(1.0)


# ------------------------------------------------------------------------ the worker's side
class Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)


def test_the_state_machine_feeds_the_vip_s_program_else_the_agent_s() -> None:
    runs = FakeRuns(returncode=2)
    spec = [VipSpec(VIP_ID, VIP)]
    notifier = Notifier(Config("lo", "h1", (), notify=("/etc/link/scripts/agent-wide",)), lambda: spec[0], lambda: None)
    notifier.queue = queue(runs)
    fsm = StateMachine(label=f"{VIP} ", on_change=notifier.changed)
    fsm.handle(Event.DEMOTED, "another host holds the lock")
    fsm.handle(Event.DEMOTED, "still standby")  # no change: no run
    spec[0] = VipSpec(VIP_ID, VIP, notify=(PROGRAM, "x"))  # a PATCH: the VIP's own wins from now on
    fsm.handle(Event.ELECTED, "took the free lock")
    notifier.released(fsm.state, "stopping: asked by the supervisor", wait=WAIT)
    assert [argv[:-4] for argv in runs.argvs] == [["/etc/link/scripts/agent-wide"], [PROGRAM, "x"], [PROGRAM, "x"]]
    assert [argv[-3:-1] for argv in runs.argvs] == [["BOOTING", "STANDBY"], ["STANDBY", "ACTIVATED"], ["ACTIVATED", RELEASED]]
    metrics, sent = WorkerMetrics(), Sent()
    notifier.deliver(metrics, sent, lambda: {"notify": dict(metrics.notify_runs)})
    assert metrics.notify_runs == {"failed": 3}
    assert [(m.event, m.metrics) for m in sent.messages if isinstance(m, NotifyReport)] == [
        ("notify_failed", {"notify": {"failed": 1}}), ("notify_failed", {"notify": {"failed": 2}}),
        ("notify_failed", {"notify": {"failed": 3}})]
    assert "exited 2" in sent.messages[0].reason  # type: ignore[attr-defined]


def test_without_any_program_nothing_is_queued() -> None:
    notifier = Notifier(Config("lo", "h1", ()), lambda: VipSpec(VIP_ID, VIP), lambda: None)
    notifier.changed(State.BOOTING, State.STANDBY, "x")
    assert notifier.queue.idle() and notifier.queue.take_results() == []


def test_a_failed_run_is_an_event_on_the_vip_and_a_counter() -> None:
    record = VipRecord(spec=VipSpec(VIP_ID, VIP), since=0.0)
    record.status = State.ACTIVATED.value
    observe.notify_report(NotifyReport(NotifyOutcome.TIMED_OUT.event, "notify program /p (STANDBY -> ACTIVATED): timed out",
                                       {"notify": {"timed_out": 1}}), record)
    [event] = observe.events_answer(record)
    assert (event["from"], event["to"], event["event"], event["source"]) == ("ACTIVATED", "ACTIVATED", "notify_timed_out", "worker")
    assert "timed out" in event["reason"] and record.metrics == {"notify": {"timed_out": 1}}
    sup = FakeSupervisor()
    created = add(make_app(sup, version=VERSION))
    sup.worker_metrics[created["id"]] = {"notify": {"ok": 4, "timed_out": 1}}
    text = wsgi_request(make_app(sup, version=VERSION), "GET", "/metrics").body.decode()
    assert f'link_vip_notify_runs_total{{id="{created["id"]}",ip="{VIP}",outcome="timed_out"}} 1.0' in text
    assert f'link_vip_notify_runs_total{{id="{created["id"]}",ip="{VIP}",outcome="ok"}} 4.0' in text


# ------------------------------------------------------------------------------- the API
def test_the_api_refuses_a_program_outside_scripts_dir_naming_the_field(scripts) -> None:
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION, scripts_dir=str(scripts.path))
    for body, words in [
        ({"ip": VIP, "notify": ["/bin/sh", "-c", "touch /marker"]}, ("notify[0] '/bin/sh'", "is not inside SCRIPTS_DIR")),
        ({"ip": VIP, "notify": "/etc/link/scripts/notify"}, ("notify must be a non-empty list of strings",)),
        ({"ip": VIP, "notify": ["relative"]}, ("notify[0] must be an absolute path",)),
        ({"ip": VIP, "notify": [PROGRAM, 3]}, ("notify[1] must be a non-empty string",)),
    ]:
        assert_json_error(wsgi_request(app, "POST", "/ips", body, JSON_HEADERS), 400, *words)
    assert sup.requests == []  # nothing created
    created = add(app)
    res = wsgi_request(app, "PATCH", f"/ips/{created['id']}", {"notify": ["/usr/bin/id"]}, JSON_HEADERS)
    assert_json_error(res, 400, "notify[0] '/usr/bin/id' is not inside SCRIPTS_DIR")
    assert [r["op"] for r in sup.requests] == ["add"]  # nothing changed
    assert sup.ips[created["id"]]["notify"] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="through the app programs must be root's (CI runs as root)")
def test_the_api_takes_a_program_in_scripts_dir_on_add_and_update(scripts) -> None:
    program = scripts.add("notify", "exit 0\n")
    sup = FakeSupervisor()
    app = make_app(sup, version=VERSION, scripts_dir=str(scripts.path))
    res = wsgi_request(app, "POST", "/ips", {"ip": VIP, "notify": [program, "--any", "$(x)"]}, JSON_HEADERS)
    assert res.status == 201 and res.json()["notify"] == [program, "--any", "$(x)"]
    assert sup.requests[-1]["notify"] == [program, "--any", "$(x)"]
    res = wsgi_request(app, "PATCH", f"/ips/{res.json()['id']}", {"notify": None}, JSON_HEADERS)
    assert res.status == 200 and res.json()["notify"] == [] and sup.requests[-1]["notify"] == []


def test_the_field_is_stored_and_read_back() -> None:
    spec = VipSpec.from_json({"id": VIP_ID, "ip": VIP, "notify": [PROGRAM, "a"]})
    assert spec.notify == (PROGRAM, "a") and VipSpec.from_json(spec.to_json()) == spec
    assert VipSpec.from_json({"id": VIP_ID, "ip": VIP}).notify == ()  # a file written before the field


# ---------------------------------------------------------------------------- the settings
def test_notify_and_its_timeout_are_checked_at_start(scripts) -> None:
    program = scripts.add("notify", "exit 0\n")
    base = {"INTERFACE": "lo", "SCRIPTS_DIR": str(scripts.path)}
    config = load(base)
    assert config.notify == () and config.notify_timeout == 5.0
    if os.geteuid() == 0:  # the rule wants root's programs
        config = load({**base, "NOTIFY": f"{program} --tag 'db one'", "NOTIFY_TIMEOUT": "500ms"})
        assert config.notify == (program, "--tag", "db one") and config.notify_timeout == 0.5
    for extra, words in [({"NOTIFY": "/usr/bin/id -u"}, "NOTIFY '/usr/bin/id' is not inside SCRIPTS_DIR"),
                         ({"NOTIFY": "'unclosed"}, "NOTIFY="), ({"NOTIFY_TIMEOUT": "0"}, "NOTIFY_TIMEOUT"),
                         ({"NOTIFY_TIMEOUT": "soon"}, "NOTIFY_TIMEOUT")]:
        with pytest.raises(ConfigError, match="NOTIFY") as exc:
            load({**base, **extra})
        assert words in str(exc.value)


# ---------------------------------------------------------------------------------- the CLI
class FakeAgent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path, body))
        return {"id": VIP_ID, "ip": VIP}


def test_link_client_sends_notify_on_add_and_update() -> None:
    parser = link_client.build_parser()
    agent = FakeAgent()
    args = parser.parse_args(["add", "198.51.100.50", "--notify", f"{PROGRAM} --tag 'db one'"])
    args.func(agent, args, io.StringIO())
    args = parser.parse_args(["set-health-checks", VIP_ID, "--notify", ""])
    args.func(agent, args, io.StringIO())
    assert agent.calls[0][2] == {"ip": "198.51.100.50", "notify": [PROGRAM, "--tag", "db one"]}
    assert agent.calls[1][:2] == ("PATCH", f"/ips/{VIP_ID}") and agent.calls[1][2] == {"notify": []}
    assert link_client.main(["add", "198.51.100.50", "--notify", "notify.sh"]) == link_client.EXIT_USAGE


def test_link_client_shows_the_program_or_the_agent_s() -> None:
    from link.cli.output import format_ip
    from tests.unit.api_fakes import ip_object

    def shown(ip: dict[str, Any]) -> list[str]:
        return [line.split(":", 1)[1].strip() for line in format_ip(ip).splitlines() if line.startswith("notify:")]

    ip = {**ip_object(VIP_ID, VIP), "notify": [PROGRAM, "--tag", "db one"]}
    assert shown(ip) == [f"{PROGRAM} --tag 'db one'"]
    assert shown({**ip, "notify": []}) == ["the agent's NOTIFY"]
