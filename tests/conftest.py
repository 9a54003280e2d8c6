"""Fixtures for the whole suite: the namespace lab, and a per-test time limit (no plugins)."""
from __future__ import annotations

import contextlib
import os
import signal
from typing import NoReturn
from typing import Iterator

import pytest

from tests.lab import Lab, sweep_stale, usable

DEFAULT_TIMEOUT = float(os.environ.get("LINK_TEST_TIMEOUT", "120"))
_UNUSABLE: list[str | None] = []


def lab_unavailable() -> str | None:
    """Why the lab cannot run here (not root, or `ip netns add` fails), else None; asked once."""
    if not _UNUSABLE:
        _UNUSABLE.append(usable())
    return _UNUSABLE[0]


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() == 0:
        sweep_stale()  # namespaces and processes of a lab run that was SIGKILLed


# ---------------------------------------------------------------- per-test time limit
def _limit(item: pytest.Item) -> float:
    marker = item.get_closest_marker("lab_timeout")
    return float(marker.args[0]) if marker else DEFAULT_TIMEOUT


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _alarm(_limit(item), item.nodeid, "setup"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _alarm(_limit(item), item.nodeid, "call"):
        yield


class _alarm:
    """SIGALRM after `seconds`: fails the test (pytest.fail raises a BaseException, so no
    `except Exception` in a wait loop swallows it); fixtures' finalizers still clean up."""

    def __init__(self, seconds: float, nodeid: str, phase: str) -> None:
        self.seconds, self.nodeid, self.phase = seconds, nodeid, phase
        self.usable = seconds > 0 and hasattr(signal, "setitimer")

    def _fire(self, _signum: int, _frame: object) -> None:
        pytest.fail(f"{self.nodeid}: {self.phase} took more than {self.seconds:g}s (per-test limit)")

    def __enter__(self) -> "_alarm":
        if self.usable:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


# ---------------------------------------------------------------- the lab
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
    # A test's own lab, or a module's lab it was given as a fixture.
    lab = getattr(item, "_lab", None) or next(
        (value for value in getattr(item, "funcargs", {}).values() if isinstance(value, Lab)), None)
    if lab is not None and rep.failed and rep.when in ("setup", "call"):
        rep.sections.append(("lab logs", f"lab directory (kept): {lab.workdir}\n{lab.logs()}"))


@pytest.fixture
def lab(request: pytest.FixtureRequest):
    """A fresh lab per test: bridge + etcd, N host namespaces (no agents yet), a client."""
    reason = lab_unavailable()
    if reason:
        if os.environ.get("LINK_LAB_REQUIRED") == "1":
            pytest.fail(f"LINK_LAB_REQUIRED=1 but {reason}")
        pytest.skip(reason)
    marker = request.node.get_closest_marker("hosts")
    the_lab = Lab(hosts=int(marker.args[0]) if marker else 3)
    request.node._lab = the_lab
    the_lab.up()
    failed = True
    try:
        yield the_lab
        failed = False
    finally:
        rep = getattr(request.node, "rep_call", None)
        failed = failed or rep is None or rep.failed
        the_lab.close(keep_workdir=failed)


def scripts_dir_unavailable(exc: Exception) -> NoReturn:
    """No SCRIPTS_DIR can be made here: a skip for a developer, a failure where the lab is required (CI)."""
    if os.environ.get("LINK_LAB_REQUIRED") == "1":
        pytest.fail(f"LINK_LAB_REQUIRED=1 but no SCRIPTS_DIR can be made: {exc}")
    pytest.skip(str(exc))


@pytest.fixture
def scripts():
    """A SCRIPTS_DIR of the test's own (tests/lab/scripts.py), removed at the end, also on failure."""
    from tests.lab.scripts import ScriptsDir, ScriptsDirUnavailable

    try:
        directory = ScriptsDir()
    except ScriptsDirUnavailable as exc:
        scripts_dir_unavailable(exc)
    try:
        yield directory
    finally:
        directory.close()


@contextlib.contextmanager
def module_lab(request: pytest.FixtureRequest, hosts: int = 2, agent_env: dict[str, str] | None = None) -> Iterator[Lab]:
    """A lab shared by a module's tests (a module-scoped fixture's body): up, then closed at
    the end; its directory, with the agents' logs, is kept when one of the module's tests
    failed. Skipped (or failed, with LINK_LAB_REQUIRED=1) where the lab cannot run."""
    reason = lab_unavailable()
    if reason:
        if os.environ.get("LINK_LAB_REQUIRED") == "1":
            pytest.fail(f"LINK_LAB_REQUIRED=1 but {reason}")
        pytest.skip(reason)
    the_lab = Lab(hosts=hosts, agent_env=agent_env)
    failed_before = request.session.testsfailed
    ok = False
    try:
        the_lab.up()
        yield the_lab
        ok = request.session.testsfailed == failed_before
    finally:
        if not ok:
            print(f"lab directory (kept): {the_lab.workdir}")
        the_lab.close(keep_workdir=not ok)
