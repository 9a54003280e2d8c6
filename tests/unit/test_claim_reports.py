"""A worker's `claim` report through the real Arbiter (its OS/process calls faked, messages on
real pipes): the VIP's foreign_claim field, its events, the gauge and counter in the metrics
answer and in the Prometheus text the API renders from it."""
from __future__ import annotations

import pathlib
import signal
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from link.api.metrics import render
from tests.unit.test_arbiter import booted_arbiter, request

VIP = "198.51.100.50/32"
CLAIM = {"mac": "02:00:00:00:03:01", "host": "h2", "since": 1700000000.5, "kind": "arp-announce"}


@pytest.fixture
def setup(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any, str]:
    arb, ops, clock = booted_arbiter(tmp_path, monkeypatch)
    vip_id = request(arb, ops, "add", ip=VIP)["result"]["id"]
    pid = arb.vips[vip_id].pid
    ops.children[pid].send({"type": "state", "state": "ACTIVATED", "from": None, "event": None, "since": 1700000000.0,
                            "holder": "h1", "reason": ""})
    arb.turn(max_wait=0.01)
    return arb, ops, clock, vip_id


def claim(arb: Any, ops: Any, vip_id: str, found: dict[str, Any] | None, event: str, detections: int) -> None:
    ops.children[arb.vips[vip_id].pid].send({"type": "claim", "claim": found, "event": event, "reason": f"{event} reason",
                                             "metrics": {"claims": {"detections": detections, "probes": 4}}})
    arb.turn(max_wait=0.01)


def scrape(arb: Any, ops: Any) -> dict[str, float]:
    text = render(request(arb, ops, "metrics")["result"], "0").decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.labels.get("ip") == VIP and "claim" in sample.name}


def test_a_claim_is_a_field_an_event_a_gauge_and_a_count_until_it_is_over(setup: tuple[Any, Any, Any, str]) -> None:
    arb, ops, _, vip_id = setup
    assert request(arb, ops, "get", vip_id=vip_id)["result"]["foreign_claim"] is None
    assert scrape(arb, ops) == {"link_vip_foreign_claims_total": 0, "link_vip_foreign_claim": 0,
                                "link_vip_claim_probes_total": 0}
    claim(arb, ops, vip_id, CLAIM, "foreign_claim", 1)
    shown = request(arb, ops, "get", vip_id=vip_id)["result"]["foreign_claim"]
    assert shown == {"mac": CLAIM["mac"], "host": "h2", "since": "2023-11-14T22:13:20.500Z", "kind": "arp-announce"}
    assert scrape(arb, ops) == {"link_vip_foreign_claims_total": 1, "link_vip_foreign_claim": 1,
                                "link_vip_claim_probes_total": 4}
    claim(arb, ops, vip_id, None, "foreign_claim_over", 1)
    assert request(arb, ops, "get", vip_id=vip_id)["result"]["foreign_claim"] is None
    assert scrape(arb, ops)["link_vip_foreign_claim"] == 0
    events = request(arb, ops, "events", vip_id=vip_id)["result"]
    assert [(e["from"], e["to"], e["event"], e["source"]) for e in events] == [
        ("ACTIVATED", "ACTIVATED", "foreign_claim", "worker"), ("ACTIVATED", "ACTIVATED", "foreign_claim_over", "worker")]


def test_a_dead_workers_claim_goes_with_it_and_its_count_stays(setup: tuple[Any, Any, Any, str]) -> None:
    arb, ops, clock, vip_id = setup
    claim(arb, ops, vip_id, CLAIM, "foreign_claim", 2)
    pid = arb.vips[vip_id].pid
    clock.now += 60
    ops.die(pid, -signal.SIGKILL)  # its successor looks again: no claim is shown for it meanwhile
    arb.turn(max_wait=0.01)
    assert request(arb, ops, "get", vip_id=vip_id)["result"]["foreign_claim"] is None
    got = scrape(arb, ops)
    assert (got["link_vip_foreign_claim"], got["link_vip_foreign_claims_total"]) == (0, 2)
