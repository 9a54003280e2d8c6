"""Options of the chaos run: how long (--chaos-seconds), which random schedule (--chaos-seed),
and which FAULT_POLICY the agents run with (--chaos-fault-policy; default: none set, so the
agents' configured default). All also read from the environment (LINK_CHAOS_SECONDS,
LINK_CHAOS_SEED, LINK_CHAOS_FAULT_POLICY), for a run of the whole suite, where options of this
directory's conftest are not known yet.
The run's summary (seed, faults, longest gap and double, API calls) is printed at the end of
pytest's output whether the run passed or failed (pytest shows a passing test's output only
with -rP): the `chaos_report` fixture hands it to `pytest_terminal_summary`.

    pytest tests/chaos                                  # the CI run, 90 s of chaos
    pytest tests/chaos --chaos-seconds 1800             # a longer one
    pytest tests/chaos --chaos-seed 1234567             # the same schedule again
    pytest tests/chaos --chaos-fault-policy activate    # LinK's rule for the VIPs without their own
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable

import pytest

DEFAULT_SECONDS = 90.0  # the suite stays under 15 minutes; longer runs: --chaos-seconds
# Setting up (etcd cluster, agents, VIPs) and the end (restoring, converging, judging).
OVERHEAD = 240.0
_SUMMARIES = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos")
    group.addoption("--chaos-seconds", type=float, default=None,
                    help=f"how long faults are injected (default LINK_CHAOS_SECONDS or {DEFAULT_SECONDS:g})")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="seed of the fault schedule (default LINK_CHAOS_SEED or a random one, printed)")
    group.addoption("--chaos-fault-policy", default=None,
                    help="FAULT_POLICY of the agents (default LINK_CHAOS_FAULT_POLICY or their configured default)")


def _option(config: pytest.Config, name: str):
    try:
        return config.getoption(name)
    except ValueError:  # this conftest was not loaded at start-up: no such option
        return None


def chaos_seconds(config: pytest.Config) -> float:
    value = _option(config, "--chaos-seconds")
    if value is None:
        value = float(os.environ.get("LINK_CHAOS_SECONDS", DEFAULT_SECONDS))
    return value


def chaos_seed(config: pytest.Config) -> int:
    if not hasattr(config, "_chaos_seed"):
        value = _option(config, "--chaos-seed")
        if value is None and os.environ.get("LINK_CHAOS_SEED"):
            value = int(os.environ["LINK_CHAOS_SEED"])
        config._chaos_seed = value if value is not None else random.SystemRandom().randrange(1, 2**31)
    return config._chaos_seed


def pytest_report_header(config: pytest.Config) -> str:
    return (f"chaos: {chaos_seconds(config):g} s of faults, seed {chaos_seed(config)} "
            f"(again with --chaos-seed {chaos_seed(config)} or LINK_CHAOS_SEED={chaos_seed(config)})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:  # the per-test time limit (tests/conftest.py) follows --chaos-seconds
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.lab_timeout(chaos_seconds(config) + OVERHEAD))


def chaos_fault_policy(config: pytest.Config) -> str | None:
    return _option(config, "--chaos-fault-policy") or os.environ.get("LINK_CHAOS_FAULT_POLICY") or None


@pytest.fixture
def chaos_settings(request: pytest.FixtureRequest) -> tuple[float, int]:
    return chaos_seconds(request.config), chaos_seed(request.config)


@pytest.fixture
def chaos_policy(request: pytest.FixtureRequest) -> str | None:
    return chaos_fault_policy(request.config)


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    """Keep a run's summary for the end of pytest's output."""
    return request.config.stash.setdefault(_SUMMARIES, []).append


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A chaos summary (tests/chaos/engine.py: Chaos.summary) in a few lines for people."""
    seed = summary.get("seed")
    lines = [f"seed {seed} (the same schedule again: --chaos-seed {seed} or LINK_CHAOS_SEED={seed})"]
    if "gaps" not in summary:  # the run did not get as far as observing
        return lines + ["no summary: " + (", ".join(f"{k} {v}" for k, v in summary.items() if k != "seed") or "-")]
    bounds = summary.get("bounds_s", {})
    faults = summary.get("faults") or {}
    calls = summary.get("api_calls", {})
    observer = summary.get("observer", {})
    lines += [
        f"{summary.get('seconds')} s, {summary.get('violations')} violation(s)",
        "faults: " + (", ".join(f"{name} {count}" for name, count in faults.items()) or "none"),
        f"longest gap {summary.get('longest_gap_s')} s ({summary.get('gaps')} gaps; with a healthy candidate up "
        f"{summary.get('longest_gap_with_a_candidate_s')} s, bound {bounds.get('gap')} s)",
        f"longest double {summary.get('longest_double_s')} s ({summary.get('doubles')} doubles; while etcd was reachable "
        f"{summary.get('longest_double_while_etcd_reachable_s')} s, bound {bounds.get('double')} s)",
        f"client's entry elsewhere than at a live holder: longest {summary.get('longest_client_entry_elsewhere_s')} s "
        f"(bound {bounds.get('client_entry')} s after a change); fault policies {summary.get('fault_policies')}",
        f"API calls: {calls.get('valid')} valid, {calls.get('invalid')} invalid ("
        + ", ".join(f"{status}: {count}" for status, count in (calls.get("statuses") or {}).items()) + ")",
        f"observer: {observer.get('samples')} samples, longest step {observer.get('longest_step_s')} s",
    ]
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for summary in config.stash.get(_SUMMARIES, []):
        terminalreporter.write_sep("=", "chaos summary")
        for line in summary_lines(summary):
            terminalreporter.write_line(f"chaos: {line}")
