"""Options of the chaos run: how long (--chaos-seconds) and which random schedule
(--chaos-seed). Both also read from the environment (LINK_CHAOS_SECONDS, LINK_CHAOS_SEED),
for a run of the whole suite, where options of this directory's conftest are not known yet:

    pytest tests/chaos                                  # the CI run, about 2.5 minutes of chaos
    pytest tests/chaos --chaos-seconds 1800             # a longer one
    pytest tests/chaos --chaos-seed 1234567             # the same schedule again
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

DEFAULT_SECONDS = 150.0
# Setting up (etcd cluster, agents, VIPs) and the end (restoring, converging, judging).
OVERHEAD = 240.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chaos")
    group.addoption("--chaos-seconds", type=float, default=None,
                    help=f"how long faults are injected (default LINK_CHAOS_SECONDS or {DEFAULT_SECONDS:g})")
    group.addoption("--chaos-seed", type=int, default=None,
                    help="seed of the fault schedule (default LINK_CHAOS_SEED or a random one, printed)")


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


@pytest.fixture
def chaos_settings(request: pytest.FixtureRequest) -> tuple[float, int]:
    return chaos_seconds(request.config), chaos_seed(request.config)
