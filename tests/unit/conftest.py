"""Fixtures every unit test gets."""
from __future__ import annotations

from typing import Iterator

import pytest

from link import probe_budget


@pytest.fixture(autouse=True)
def _no_vip_count_from_another_test() -> Iterator[None]:
    # The VIP count the supervisor shares with its workers lives in one page of this process
    # (link.probe_budget): a unit test that runs an Arbiter writes it, and a later test of the
    # claim watch would probe at that host's budget. Each test starts from "none written".
    probe_budget.set_vips(0)
    yield
    probe_budget.set_vips(0)
