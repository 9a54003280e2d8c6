"""GET /metrics and GET /ips/<id>/events through the WSGI app, with a fake supervisor answer;
the metrics are read back with prometheus_client's own parser."""
from __future__ import annotations

import base64
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from link.api import make_app
from link.api.metrics import render
from tests.unit.api_fakes import FakeSupervisor, ip_object, wsgi_request

VERSION = "4.5.6"
ID = "vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e"
NUMBERS = {
    "transitions": {"elected": 2, "demoted": 1},
    "announce_packets": 6,
    "health": {"results": {"pass": 9, "fail": 3}, "seconds": 1.5, "count": 12},
    "etcd": {"requests": {"Range": 40, "LeaseKeepAlive": 20}, "seconds": {"Range": 0.4, "LeaseKeepAlive": 0.1},
             "errors": {"Txn": {"unavailable": 2}}, "lease_grants": 1, "lease_renewals": 20},
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def vip_labels(**more: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"id": ID, "ip": "198.51.100.50/32", **more}.items()))


@pytest.fixture
def sup() -> FakeSupervisor:
    fake = FakeSupervisor()
    fake.ips[ID] = {**ip_object(ID, "198.51.100.50/32", "ACTIVATED"), "holder": "h1"}
    fake.ips[ID]["worker"]["restarts"] = 2
    fake.worker_metrics[ID] = NUMBERS
    return fake


def test_metrics_are_served_in_the_prometheus_format(sup: FakeSupervisor) -> None:
    res = wsgi_request(make_app(sup, version=VERSION), "GET", "/metrics")
    assert res.status == 200 and res.headers["content-type"].startswith("text/plain")
    got = samples(res.body.decode())
    assert got[("link_build_info", (("version", VERSION),))] == 1
    assert got[("link_workers", ())] == 1
    for state in ("BOOTING", "STANDBY", "ACTIVATED", "FAILING"):
        assert got[("link_vip_state", vip_labels(state=state))] == (1 if state == "ACTIVATED" else 0)
    assert got[("link_vip_transitions_total", vip_labels(event="elected"))] == 2
    assert got[("link_vip_transitions_total", vip_labels(event="demoted"))] == 1
    assert got[("link_vip_announcement_packets_total", vip_labels())] == 6
    assert got[("link_vip_health_checks_total", vip_labels(outcome="fail"))] == 3
    assert got[("link_vip_health_check_duration_seconds_count", vip_labels())] == 12
    assert got[("link_vip_health_check_duration_seconds_sum", vip_labels())] == 1.5
    assert got[("link_vip_etcd_request_duration_seconds_count", vip_labels(method="Range"))] == 40
    assert got[("link_vip_etcd_errors_total", vip_labels(method="Txn", kind="unavailable"))] == 2
    assert got[("link_vip_lease_renewals_total", vip_labels())] == 20
    assert got[("link_worker_respawns_total", vip_labels())] == 2
    assert got[("link_vip_last_transition_timestamp_seconds", vip_labels())] == 1700000000.0
    assert got[("link_vip_seconds_since_transition", vip_labels())] > 0
    assert sup.requests[-1] == {"op": "metrics"}


def test_seconds_since_the_transition_come_from_the_clock() -> None:
    answer = {"workers": 0, "vips": [{"id": ID, "ip": "198.51.100.50/32", "status": "STANDBY", "since": 100.0,
                                      "restarts": 0, "metrics": {}}]}
    got = samples(render(answer, VERSION, clock=lambda: 112.5).decode())
    assert got[("link_vip_seconds_since_transition", vip_labels())] == 12.5
    assert got[("link_vip_state", vip_labels(state="STANDBY"))] == 1
    # A worker that has not reported numbers yet shows zeros, not gaps.
    assert got[("link_vip_announcement_packets_total", vip_labels())] == 0


@pytest.mark.parametrize("answer", [{}, {"vips": "nonsense", "workers": None}, {"vips": [{"metrics": "x"}, 3]}])
def test_odd_answers_still_render(answer: dict[str, Any]) -> None:
    got = samples(render(answer, VERSION).decode())
    assert got[("link_build_info", (("version", VERSION),))] == 1


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_metrics_need_auth_like_the_api_by_default(sup: FakeSupervisor) -> None:
    app = make_app(sup, user="admin", password="pw", version=VERSION)
    assert wsgi_request(app, "GET", "/metrics").status == 401
    assert wsgi_request(app, "GET", "/metrics", headers=_basic("admin", "pw")).status == 200


def test_metrics_auth_false_opens_metrics_only(sup: FakeSupervisor) -> None:
    app = make_app(sup, user="admin", password="pw", version=VERSION, metrics_auth=False)
    assert wsgi_request(app, "GET", "/metrics").status == 200
    assert wsgi_request(app, "GET", "/ips").status == 401
    assert wsgi_request(app, "GET", f"/ips/{ID}/events").status == 401


def test_metrics_without_a_supervisor_is_a_json_503(sup: FakeSupervisor) -> None:
    sup.fail_with = TimeoutError("no answer")
    res = wsgi_request(make_app(sup, version=VERSION), "GET", "/metrics")
    assert res.status == 503 and "error" in res.json()


def test_events_route(sup: FakeSupervisor) -> None:
    event = {"time": "2026-11-22T01:02:03.456Z", "from": "STANDBY", "to": "ACTIVATED", "event": "elected",
             "reason": "took the free lock", "source": "worker"}
    sup.events[ID] = [event]
    app = make_app(sup, version=VERSION)
    res = wsgi_request(app, "GET", f"/ips/{ID}/events")
    assert res.status == 200 and res.json() == {"events": [event]}
    assert sup.requests[-1] == {"op": "events", "vip_id": ID}
    missing = wsgi_request(app, "GET", "/ips/vip-00000000-0000-4000-8000-000000000000/events")
    assert missing.status == 404 and missing.json() == {"resource": "IP", "error": "not found"}
    assert wsgi_request(app, "GET", "/ips/nonsense/events").status == 400
