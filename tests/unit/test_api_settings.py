"""The API's health-check settings (on POST /ips and PUT/PATCH /ips/<id>) and failover, through
the WSGI app with a fake supervisor behind `call`."""
from __future__ import annotations

import uuid
from typing import Any

import bottle
import pytest

from link.api import make_app
from tests.unit.api_fakes import FakeSupervisor, wsgi_request
from tests.unit.test_api import JSON_HEADERS, UNKNOWN_ID, VERSION, add, assert_json_error

TCP_CHECK = {"type": "TCP", "host": "198.51.100.20", "port": 5432}
HTTP_CHECK = {"type": "HTTP", "url": "http://198.51.100.20:8080/health", "expect_status": 204}


@pytest.fixture
def sup() -> FakeSupervisor:
    return FakeSupervisor()


@pytest.fixture
def app(sup: FakeSupervisor) -> bottle.Bottle:
    return make_app(sup, version=VERSION)


# --- POST /ips with settings ---------------------------------------------------------------------

def test_add_with_every_setting_passes_them_checked_to_the_supervisor(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    body = {
        "ip": "198.51.100.50",
        # EXEC checks need a program in SCRIPTS_DIR: test_api_programs.py.
        "checks": [TCP_CHECK, {"type": "http", "url": " http://198.51.100.20/ "}, HTTP_CHECK],
        "healthcheck_interval": 2.5,
        "fault_policy": "keep",
    }
    res = wsgi_request(app, "POST", "/ips", body, JSON_HEADERS)
    assert res.status == 201, res.body
    canonical = [TCP_CHECK, {"type": "HTTP", "url": "http://198.51.100.20/", "expect_status": 200}, HTTP_CHECK]
    assert sup.requests == [
        {"op": "add", "ip": "198.51.100.50/32", "checks": canonical, "healthcheck_interval": 2.5, "fault_policy": "keep"}
    ]
    created = res.json()
    assert created["checks"] == canonical and created["healthcheck_interval"] == 2.5 and created["fault_policy"] == "keep"


def test_add_accepts_healthchecks_as_the_name_of_the_checks(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.50", "healthchecks": [TCP_CHECK]}, JSON_HEADERS)
    assert res.status == 201, res.body
    assert sup.requests[-1]["checks"] == [TCP_CHECK]


def test_add_as_links_go_client_sends_it_with_its_zero_values(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    # No Content-Type header, "id": "", and null/0 for the settings the caller left alone.
    body = '{"id":"","ip":"198.51.100.60/32","checks":null,"keepalive_interval":0,"healthcheck_interval":0}\n'
    res = wsgi_request(app, "POST", "/ips", body)
    assert res.status == 201, res.body
    assert sup.requests == [{"op": "add", "ip": "198.51.100.60/32", "checks": [], "healthcheck_interval": 0.0}]


def test_add_with_links_tcp_check(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    # What LinK's `link-client add IP TCP host:port` sends.
    body = '{"healthcheck_interval":0,"checks":[{"type":"TCP","host":"198.51.100.20","port":5432}],"ip":"198.51.100.61"}\n'
    res = wsgi_request(app, "POST", "/ips", body)
    assert res.status == 201, res.body
    assert sup.requests[-1]["checks"] == [TCP_CHECK]


@pytest.mark.parametrize(("given", "sent"), [(None, ""), ("", ""), ("release", "release")])
def test_add_fault_policy_empty_means_the_agents(app: bottle.Bottle, sup: FakeSupervisor, given: Any, sent: str) -> None:
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.50", "fault_policy": given}, JSON_HEADERS)
    assert res.status == 201, res.body
    assert sup.requests[-1]["fault_policy"] == sent


@pytest.mark.parametrize(("given", "sent"), [(None, 0.0), (0, 0.0), (0.1, 0.1), (3600, 3600.0)])
def test_add_healthcheck_interval_bounds(app: bottle.Bottle, sup: FakeSupervisor, given: Any, sent: float) -> None:
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.50", "healthcheck_interval": given}, JSON_HEADERS)
    assert res.status == 201, res.body
    assert sup.requests[-1]["healthcheck_interval"] == sent
    assert isinstance(sup.requests[-1]["healthcheck_interval"], float)


def test_a_whole_healthcheck_interval_goes_out_as_an_integer(app: bottle.Bottle) -> None:
    # LinK's Go client reads healthcheck_interval into an int: "5.0" would fail to decode.
    created = add(app)
    assert wsgi_request(app, "GET", f"/ips/{created['id']}").body.count(b'"healthcheck_interval": 0,') == 1
    res = wsgi_request(app, "PATCH", f"/ips/{created['id']}", {"healthcheck_interval": 5}, JSON_HEADERS)
    assert b'"healthcheck_interval": 5,' in res.body
    res = wsgi_request(app, "PATCH", f"/ips/{created['id']}", {"healthcheck_interval": 1.5}, JSON_HEADERS)
    assert b'"healthcheck_interval": 1.5,' in res.body
    assert b'"healthcheck_interval": 1.5,' in wsgi_request(app, "GET", "/ips").body


# --- PUT / PATCH /ips/<id> -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_update_replaces_the_checks_as_links_client_asks(app: bottle.Bottle, sup: FakeSupervisor, method: str) -> None:
    created = add(app)
    res = wsgi_request(app, method, f"/ips/{created['id']}", {"healthchecks": [TCP_CHECK, HTTP_CHECK]})
    assert res.status == 200, res.body
    assert res.headers["content-type"] == "application/json"
    assert sup.requests[-1] == {"op": "update", "vip_id": created["id"], "checks": [TCP_CHECK, HTTP_CHECK]}
    updated = res.json()  # the IP object itself, as LinK's PATCH answers
    assert updated["id"] == created["id"] and updated["checks"] == [TCP_CHECK, HTTP_CHECK]


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"checks": [HTTP_CHECK]}, {"checks": [HTTP_CHECK]}),
        ({"healthchecks": None}, {"checks": []}),
        ({"healthchecks": []}, {"checks": []}),
        ({"healthcheck_interval": 10}, {"healthcheck_interval": 10.0}),
        ({"healthcheck_interval": 0}, {"healthcheck_interval": 0.0}),
        ({"fault_policy": "release"}, {"fault_policy": "release"}),
        ({"fault_policy": ""}, {"fault_policy": ""}),
        (
            {"healthchecks": [TCP_CHECK], "healthcheck_interval": 1, "fault_policy": "keep"},
            {"checks": [TCP_CHECK], "healthcheck_interval": 1.0, "fault_policy": "keep"},
        ),
    ],
)
def test_update_sends_only_the_settings_given(app: bottle.Bottle, sup: FakeSupervisor, body: dict[str, Any], sent: dict[str, Any]) -> None:
    created = add(app)
    res = wsgi_request(app, "PATCH", f"/ips/{created['id']}", body, JSON_HEADERS)
    assert res.status == 200, res.body
    assert sup.requests[-1] == {"op": "update", "vip_id": created["id"], **sent}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ["nothing to update", "healthchecks"]),
        ({"ip": "198.51.100.51"}, ["unknown field 'ip'"]),
        ({"healthchecks": [{"type": "TCP", "host": "h", "port": 0}]}, ["healthchecks[0].port must be between 1 and 65535"]),
        ({"checks": [TCP_CHECK, {"type": "TCP", "host": "h"}]}, ["checks[1].port is required"]),
        ({"healthchecks": {"type": "TCP"}}, ["healthchecks must be a list"]),
        ({"checks": [], "healthchecks": []}, ["not both"]),
        ({"healthcheck_interval": 0.05}, ["healthcheck_interval"]),
        ({"fault_policy": "panic"}, ["fault_policy"]),
        ([TCP_CHECK], ["JSON object", "array"]),
        ("{", ["malformed JSON"]),
        ("", ["JSON object"]),
    ],
)
@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_update_refuses_bad_bodies_naming_the_field(
    app: bottle.Bottle, sup: FakeSupervisor, method: str, body: Any, words: list[str]
) -> None:
    created = add(app)
    before = len(sup.requests)
    assert_json_error(wsgi_request(app, method, f"/ips/{created['id']}", body, JSON_HEADERS), 400, *words)
    assert len(sup.requests) == before


def test_update_of_an_unknown_id_is_links_404(app: bottle.Bottle) -> None:
    res = wsgi_request(app, "PATCH", f"/ips/{UNKNOWN_ID}", {"healthchecks": []}, JSON_HEADERS)
    assert res.status == 404 and res.json() == {"resource": "IP", "error": "not found"}


def test_update_of_a_malformed_id_is_400(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    assert_json_error(wsgi_request(app, "PATCH", "/ips/vip-1", {"healthchecks": []}, JSON_HEADERS), 400, "vip-<uuid4>")
    assert sup.requests == []


def test_update_refuses_a_declared_non_json_body_and_a_large_one(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    created = add(app)
    path = f"/ips/{created['id']}"
    assert_json_error(wsgi_request(app, "PATCH", path, {"healthchecks": []}, {"Content-Type": "text/plain"}), 415)
    assert_json_error(wsgi_request(app, "PATCH", path, '{"healthchecks": []}' + " " * 70000, JSON_HEADERS), 413)
    assert len(sup.requests) == 1


# --- POST /ips/<id>/failover ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (None, {}),  # LinK's Go client: no body, no Content-Type
        ("", {"Content-Type": "application/x-www-form-urlencoded"}),  # curl -X POST -d ''
        ("{}", JSON_HEADERS),
        ("  \n", {"Content-Type": "text/plain"}),  # nothing to read, so the type does not matter
    ],
)
def test_failover_answers_204_without_body(app: bottle.Bottle, sup: FakeSupervisor, body: Any, headers: dict[str, str]) -> None:
    created = add(app)
    res = wsgi_request(app, "POST", f"/ips/{created['id']}/failover", body, headers)
    assert res.status == 204, res.body
    assert res.body == b"" and "content-type" not in res.headers
    assert sup.requests[-1] == {"op": "failover", "vip_id": created["id"]}


def test_failover_passes_the_supervisors_409_on(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    created = add(app)
    sup.failover_errors[created["id"]] = "this host does not hold 198.51.100.50/32 (h2 does)"
    res = wsgi_request(app, "POST", f"/ips/{created['id']}/failover")
    assert assert_json_error(res, 409) == {"error": "this host does not hold 198.51.100.50/32 (h2 does)"}


def test_failover_of_an_unknown_id_is_links_404(app: bottle.Bottle) -> None:
    res = wsgi_request(app, "POST", f"/ips/{UNKNOWN_ID}/failover")
    assert res.status == 404 and res.json() == {"resource": "IP", "error": "not found"}


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "words"),
    [
        ("/ips/vip-1/failover", None, {}, 400, ["vip-<uuid4>"]),
        (f"/ips/{UNKNOWN_ID}/failover", '{"force": true}', JSON_HEADERS, 400, ["unknown field 'force'"]),
        (f"/ips/{UNKNOWN_ID}/failover", "[]", JSON_HEADERS, 400, ["JSON object"]),
        (f"/ips/{UNKNOWN_ID}/failover", "{", JSON_HEADERS, 400, ["malformed JSON"]),
        (f"/ips/{UNKNOWN_ID}/failover", "now", {"Content-Type": "text/plain"}, 415, ["application/json"]),
        (f"/ips/{UNKNOWN_ID}/failover", "{}" + " " * 70000, JSON_HEADERS, 413, ["64 KiB"]),
    ],
)
def test_failover_refuses_bad_input(
    app: bottle.Bottle, sup: FakeSupervisor, path: str, body: Any, headers: dict[str, str], status: int, words: list[str]
) -> None:
    assert_json_error(wsgi_request(app, "POST", path, body, headers), status, *words)
    assert sup.requests == []


@pytest.mark.parametrize("error", [TimeoutError("no answer to 'failover' within 30 s"), ConnectionError("gone")])
def test_settings_and_failover_without_supervisor_are_503(app: bottle.Bottle, sup: FakeSupervisor, error: Exception) -> None:
    sup.fail_with = error
    vip_id = f"vip-{uuid.uuid4()}"
    assert_json_error(wsgi_request(app, "PATCH", f"/ips/{vip_id}", {"healthchecks": []}, JSON_HEADERS), 503)
    assert_json_error(wsgi_request(app, "POST", f"/ips/{vip_id}/failover"), 503)


def test_auth_covers_the_new_routes(sup: FakeSupervisor) -> None:
    app = make_app(sup, user="admin", password="pw", version=VERSION)
    for method, path in [("PATCH", f"/ips/{UNKNOWN_ID}"), ("PUT", f"/ips/{UNKNOWN_ID}"),
                         ("POST", f"/ips/{UNKNOWN_ID}/failover"), ("GET", "/openapi.json")]:
        assert_json_error(wsgi_request(app, method, path, {"healthchecks": []}), 401)
    assert sup.requests == []
