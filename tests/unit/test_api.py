"""The HTTP API through its WSGI app (no socket), with a fake supervisor behind `call`."""
from __future__ import annotations

import base64
import uuid
from typing import Any

import bottle
import pytest

from link.vocabulary import protocol
from link.api import MAX_BODY_BYTES, make_app
from tests.unit.api_fakes import FakeSupervisor, WsgiResponse, wsgi_request

VERSION = "1.2.3"
JSON_HEADERS = {"Content-Type": "application/json"}
UNKNOWN_ID = f"vip-{uuid.uuid4()}"
TCP_CHECK = {"type": "TCP", "host": "198.51.100.20", "port": 5432}


@pytest.fixture
def sup() -> FakeSupervisor:
    return FakeSupervisor()


@pytest.fixture
def app(sup: FakeSupervisor) -> bottle.Bottle:
    return make_app(sup, version=VERSION)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_json_error(res: WsgiResponse, status: int, *words: str) -> dict[str, Any]:
    assert res.status == status, res.body
    assert res.headers["content-type"] == "application/json"
    body = res.json()
    assert isinstance(body.get("error"), str) and body["error"]
    for word in words:
        assert word in body["error"], body
    assert b"Traceback" not in res.body and b"<html" not in res.body.lower()
    return body


def add(app: bottle.Bottle, ip: str = "198.51.100.50/32") -> dict[str, Any]:
    res = wsgi_request(app, "POST", "/ips", {"ip": ip}, JSON_HEADERS)
    assert res.status == 201, res.body
    return res.json()


# --- success paths ------------------------------------------------------------------------------

def test_version(app: bottle.Bottle) -> None:
    res = wsgi_request(app, "GET", "/version")
    assert res.status == 200
    assert res.headers["content-type"] == "application/json"
    assert res.json() == {"version": VERSION}


def test_list_is_empty_at_first(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    res = wsgi_request(app, "GET", "/ips")
    assert res.status == 200 and res.json() == {"ips": []}
    assert sup.requests == [{"op": "list"}]


def test_add_answers_201_with_the_plain_ip_object(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.50/32"}, JSON_HEADERS)
    assert res.status == 201
    assert res.headers["content-type"] == "application/json"
    created = res.json()
    assert created["ip"] == "198.51.100.50/32" and created["id"].startswith("vip-")
    assert created["status"] == "BOOTING"
    assert sup.requests == [{"op": "add", "ip": "198.51.100.50/32"}]


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("198.51.100.50", "198.51.100.50/32"),
        (" 198.51.100.51 ", "198.51.100.51/32"),
        ("198.51.100.52/24", "198.51.100.52/24"),
        ("2001:db8::50", "2001:db8::50/128"),
        ("2001:DB8:0::51/64", "2001:db8::51/64"),
    ],
)
def test_add_normalises_the_ip_before_asking_the_supervisor(
    app: bottle.Bottle, sup: FakeSupervisor, given: str, canonical: str
) -> None:
    assert add(app, given)["ip"] == canonical
    assert sup.requests[-1] == {"op": "add", "ip": canonical}


def test_add_as_links_go_client_sends_it(app: bottle.Bottle) -> None:
    # No Content-Type header, "id": "" and the zero values of LinK's other model fields.
    body = '{"id":"","ip":"198.51.100.60/32","checks":null,"keepalive_interval":0,"healthcheck_interval":0}\n'
    res = wsgi_request(app, "POST", "/ips", body)
    assert res.status == 201, res.body
    assert res.json()["ip"] == "198.51.100.60/32"


def test_add_without_content_type_and_only_ip(app: bottle.Bottle) -> None:
    res = wsgi_request(app, "POST", "/ips", '{"ip": "198.51.100.61"}')
    assert res.status == 201, res.body


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/vnd.link+json"]
)
def test_add_accepts_json_content_types(app: bottle.Bottle, content_type: str) -> None:
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.62"}, {"Content-Type": content_type})
    assert res.status == 201, res.body


def test_add_as_curl_d_sends_it(app: bottle.Bottle) -> None:
    # `curl -d '{"ip": ...}'` labels the JSON body as a form.
    res = wsgi_request(app, "POST", "/ips", '{"ip": "198.51.100.63"}', {"Content-Type": "application/x-www-form-urlencoded"})
    assert res.status == 201, res.body


def test_get_wraps_the_ip_object(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    created = add(app)
    res = wsgi_request(app, "GET", f"/ips/{created['id']}")
    assert res.status == 200
    assert res.json() == {"ip": created}
    assert sup.requests[-1] == {"op": "get", "vip_id": created["id"]}


def test_list_shows_added_ips(app: bottle.Bottle) -> None:
    first, second = add(app, "198.51.100.50"), add(app, "198.51.100.51")
    assert wsgi_request(app, "GET", "/ips").json() == {"ips": [first, second]}


def test_delete_answers_204_without_body_then_the_ip_is_gone(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    created = add(app)
    res = wsgi_request(app, "DELETE", f"/ips/{created['id']}")
    assert res.status == 204
    assert res.body == b""
    assert "content-type" not in res.headers
    assert sup.requests[-1] == {"op": "delete", "vip_id": created["id"]}
    assert wsgi_request(app, "GET", f"/ips/{created['id']}").status == 404


def test_head_on_a_get_route(app: bottle.Bottle) -> None:
    res = wsgi_request(app, "HEAD", "/version")
    assert res.status == 200 and res.body == b""


# --- refused input ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"ip": "198.51.100.50", "id": "vip-1"}, ["id"]),
        ({"ip": "198.51.100.50", "id": 12}, ["id", "string"]),
        ({"ip": "198.51.100.50", "name": "web"}, ["'name'", "unknown field"]),
        ({"ip": "198.51.100.50", "checks": [{"type": "TCP", "port": 80}]}, ["checks[0].host is required"]),
        ({"ip": "198.51.100.50", "checks": [{"type": "TCP", "host": "h", "port": 70000}]}, ["checks[0].port must be between 1 and 65535"]),
        ({"ip": "198.51.100.50", "checks": [TCP_CHECK, {"type": "UDP"}]}, ["checks[1].type"]),
        ({"ip": "198.51.100.50", "checks": [{"type": "HTTP", "url": "http://["}]}, ["checks[0].url"]),
        ({"ip": "198.51.100.50", "healthchecks": [{"type": "EXEC", "command": ["x"]}]}, ["healthchecks[0].command[0]"]),
        ({"ip": "198.51.100.50", "checks": "none"}, ["checks must be a list"]),
        ({"ip": "198.51.100.50", "checks": [TCP_CHECK] * 17}, ["checks", "at most 16"]),
        ({"ip": "198.51.100.50", "checks": [], "healthchecks": []}, ["checks", "healthchecks", "not both"]),
        ({"ip": "198.51.100.50", "healthcheck_interval": "5"}, ["healthcheck_interval", "number"]),
        ({"ip": "198.51.100.50", "healthcheck_interval": True}, ["healthcheck_interval", "number"]),
        ({"ip": "198.51.100.50", "healthcheck_interval": -1}, ["healthcheck_interval", "between 0.1 and 3600"]),
        ({"ip": "198.51.100.50", "healthcheck_interval": 0.01}, ["healthcheck_interval", "between 0.1 and 3600"]),
        ({"ip": "198.51.100.50", "healthcheck_interval": 3601}, ["healthcheck_interval", "between 0.1 and 3600"]),
        ('{"ip": "198.51.100.50", "healthcheck_interval": 1e400}', ["healthcheck_interval", "between"]),
        ('{"ip": "198.51.100.50", "healthcheck_interval": NaN}', ["malformed JSON", "NaN"]),
        ({"ip": "198.51.100.50", "fault_policy": "ignore"}, ["fault_policy must be one of arbitrate, activate, keep, release"]),
        ({"ip": "198.51.100.50", "fault_policy": "KEEP"}, ["fault_policy"]),
        ({"ip": "198.51.100.50", "fault_policy": 1}, ["fault_policy", "string"]),
        ({"ip": "198.51.100.50", "keepalive_interval": 3}, ["keepalive_interval", "KEEPALIVE_INTERVAL"]),
        ({"ip": "198.51.100.50", "keepalive_interval": "5"}, ["keepalive_interval", "number"]),
        ({"ip": "198.51.100.50", "keepalive_interval": False}, ["keepalive_interval", "number"]),
        ({"ip": 198}, ["ip", "string"]),
        ({"ip": None}, ["ip", "string"]),
        ({"ip": ["198.51.100.50"]}, ["ip", "string"]),
        ({}, ["ip is required"]),
        ({"id": ""}, ["ip is required"]),
        ({"ip": ""}, ["ip"]),
        ({"ip": "not-an-ip"}, ["not an IPv4 or IPv6 address"]),
        ({"ip": "198.51.100.0/24"}, ["network address"]),
        ({"ip": "127.0.0.1"}, ["loopback"]),
        (["198.51.100.50"], ["JSON object", "array"]),
        ('"198.51.100.50"', ["JSON object", "string"]),
        ('{"ip": "198.51.100.50"', ["malformed JSON"]),
        ("{'ip': '198.51.100.50'}", ["malformed JSON"]),
        (b'{"ip": "\xff"}', ["UTF-8"]),
        ("", ["JSON object"]),
        ("   \n", ["JSON object"]),
        ("[" * 20000 + "]" * 20000, ["malformed JSON"]),
    ],
)
def test_add_refuses_bad_bodies_with_400_naming_the_problem(
    app: bottle.Bottle, sup: FakeSupervisor, body: Any, words: list[str]
) -> None:
    res = wsgi_request(app, "POST", "/ips", body, JSON_HEADERS)
    assert_json_error(res, 400, *words)
    assert sup.requests == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_add_refuses_a_declared_non_json_content_type_with_415(
    app: bottle.Bottle, sup: FakeSupervisor, content_type: str
) -> None:
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.50"}, {"Content-Type": content_type})
    assert_json_error(res, 415, "application/json")
    assert sup.requests == []


def test_add_refuses_a_body_over_64_kib_with_413_without_reading_it(app: bottle.Bottle, sup: FakeSupervisor) -> None:
    body = '{"ip": "198.51.100.50"}' + " " * MAX_BODY_BYTES
    res = wsgi_request(app, "POST", "/ips", body, JSON_HEADERS)
    assert_json_error(res, 413, "64 KiB")
    assert sup.requests == []


def test_add_accepts_a_body_of_exactly_64_kib(app: bottle.Bottle) -> None:
    head = '{"ip": "198.51.100.50"}'
    res = wsgi_request(app, "POST", "/ips", head + " " * (MAX_BODY_BYTES - len(head)), JSON_HEADERS)
    assert res.status == 201


@pytest.mark.parametrize("length", ["abc", "-1"])
def test_add_refuses_a_bad_content_length(app: bottle.Bottle, length: str) -> None:
    # waitress refuses such a request itself; wsgiref's validator would refuse it too.
    headers = {"Content-Type": "application/json", "Content-Length": length}
    res = wsgi_request(app, "POST", "/ips", "", headers, validate=False)
    assert_json_error(res, 400, "Content-Length")


def test_add_of_a_duplicate_is_the_supervisors_409(app: bottle.Bottle) -> None:
    add(app, "198.51.100.50")
    res = wsgi_request(app, "POST", "/ips", {"ip": "198.51.100.50/32"}, JSON_HEADERS)
    assert_json_error(res, 409, "already configured")


@pytest.mark.parametrize(
    "vip_id",
    [
        "vip-123",
        "198.51.100.50",
        f"VIP-{uuid.uuid4()}",
        f"vip-{str(uuid.uuid4()).upper()}",
        f"vip-{uuid.uuid1()}",  # a uuid, but not a random (version 4) one
        f"{uuid.uuid4()}",
        f"vip-{uuid.uuid4()}x",
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_malformed_ids_are_refused_with_400(app: bottle.Bottle, sup: FakeSupervisor, method: str, vip_id: str) -> None:
    assert_json_error(wsgi_request(app, method, f"/ips/{vip_id}"), 400, "vip-<uuid4>")
    assert sup.requests == []


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_ids_are_links_404(app: bottle.Bottle, method: str) -> None:
    res = wsgi_request(app, method, f"/ips/{UNKNOWN_ID}")
    assert res.status == 404
    assert res.headers["content-type"] == "application/json"
    assert res.json() == {"resource": "IP", "error": "not found"}


# --- errors from bottle itself and from the supervisor -----------------------------------------

@pytest.mark.parametrize("path", ["/nope", "/ips/", f"/ips/{UNKNOWN_ID}/fail", "/", f"/ips/{UNKNOWN_ID}/failover/x"])
def test_unknown_paths_are_json_404(app: bottle.Bottle, path: str) -> None:
    assert_json_error(wsgi_request(app, "GET", path), 404, "no such endpoint")


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/ips"), ("DELETE", "/ips"), ("POST", "/version"), ("POST", f"/ips/{UNKNOWN_ID}"),
     ("GET", f"/ips/{UNKNOWN_ID}/failover"), ("DELETE", "/openapi.json")],
)
def test_wrong_methods_are_json_405_with_allow(app: bottle.Bottle, method: str, path: str) -> None:
    res = wsgi_request(app, method, path)
    assert_json_error(res, 405, method)
    assert "allow" in res.headers


def test_a_path_that_is_not_utf8_is_a_json_error(app: bottle.Bottle) -> None:
    # PEP 3333 hands the raw path bytes over as latin-1 text; bottle 0.12 answers 400, while
    # 0.13 drops the undecodable bytes and finds no route.
    res = wsgi_request(app, "GET", "/ips/\xff\xfe")
    assert_json_error(res, 400 if res.status == 400 else 404)


@pytest.mark.parametrize("error", [TimeoutError("no answer to 'list' within 30 s"), ConnectionError("the supervisor is gone")])
def test_a_supervisor_that_does_not_answer_is_503(app: bottle.Bottle, sup: FakeSupervisor, error: Exception) -> None:
    sup.fail_with = error
    for method, path, body in [("GET", "/ips", None), ("POST", "/ips", {"ip": "198.51.100.50"}), ("DELETE", f"/ips/{UNKNOWN_ID}", None)]:
        assert_json_error(wsgi_request(app, method, path, body), 503, "did not answer")


def test_a_supervisor_error_status_is_passed_on(app: bottle.Bottle) -> None:
    def call(request: protocol.Message) -> protocol.Answer:
        return protocol.Refused(1, 503, "the agent is shutting down")

    res = wsgi_request(make_app(call, version=VERSION), "GET", "/ips")
    assert_json_error(res, 503, "the agent is shutting down")


@pytest.mark.parametrize(
    "answer",
    [None, "ok", {"id": 1, "ok": False, "status": 200, "error": "odd"}, {"id": 1, "ok": False, "status": "404", "error": "odd"},
     {"id": 1, "ok": False}, {"id": 1, "ok": "yes", "result": []}, {"id": 1, "ok": True, "result": [], "extra": 1}],
)
def test_a_malformed_supervisor_answer_is_500(answer: Any) -> None:
    def call(request: protocol.Message) -> protocol.Answer:
        # What the API process's pipe reader does with what the supervisor sent (link.api.server).
        return protocol.decode(answer, protocol.Family.ANSWER)  # type: ignore[return-value]

    res = wsgi_request(make_app(call, version=VERSION), "GET", "/ips")
    assert_json_error(res, 500)


def test_an_unexpected_exception_is_500_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    def call(request: protocol.Message) -> protocol.Answer:
        raise RuntimeError("secret detail from deep inside")

    res = wsgi_request(make_app(call, version=VERSION), "GET", "/ips")
    body = assert_json_error(res, 500, "internal error")
    assert "secret" not in body["error"]
    assert "secret detail from deep inside" in caplog.text  # it is in the log instead


def test_a_crash_outside_the_endpoints_is_json_500_too(app: bottle.Bottle) -> None:
    # A route added to the returned app without the endpoint wrapper: bottle's own catch-all.
    app.route("/boom", "GET", lambda: 1 // 0)
    body = assert_json_error(wsgi_request(app, "GET", "/boom"), 500, "internal error")
    assert "ZeroDivisionError" not in body["error"]


# --- basic auth ---------------------------------------------------------------------------------

@pytest.fixture
def auth_app(sup: FakeSupervisor) -> bottle.Bottle:
    return make_app(sup, user="admin", password="s3cret:é", version=VERSION)


def test_auth_accepts_the_right_credentials(auth_app: bottle.Bottle) -> None:
    assert wsgi_request(auth_app, "GET", "/ips", headers=basic("admin", "s3cret:é")).status == 200
    assert wsgi_request(auth_app, "GET", "/version", headers=basic("admin", "s3cret:é")).status == 200


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, ["authentication required"]),
        (basic("admin", "wrong"), ["invalid"]),
        (basic("root", "s3cret:é"), ["invalid"]),
        (basic("", "s3cret:é"), ["invalid"]),
        (basic("admin", "s3cret"), ["invalid"]),
        ({"Authorization": "Basic !!!not-base64!!!"}, ["invalid"]),
        ({"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, ["invalid"]),
        ({"Authorization": "Bearer abc"}, ["invalid"]),
        ({"Authorization": "Basic"}, ["invalid"]),
    ],
)
@pytest.mark.parametrize(("method", "path"), [("GET", "/ips"), ("POST", "/ips"), ("DELETE", f"/ips/{UNKNOWN_ID}"), ("GET", "/nope")])
def test_auth_refuses_with_401_and_a_challenge(
    auth_app: bottle.Bottle, sup: FakeSupervisor, headers: dict[str, str], words: list[str], method: str, path: str
) -> None:
    res = wsgi_request(auth_app, method, path, {"ip": "198.51.100.50"} if method == "POST" else None, headers)
    assert_json_error(res, 401, *words)
    assert res.headers["www-authenticate"] == 'Basic realm="link"'
    assert sup.requests == []


def test_auth_off_ignores_credentials(app: bottle.Bottle) -> None:
    assert wsgi_request(app, "GET", "/ips").status == 200
    assert wsgi_request(app, "GET", "/ips", headers=basic("any", "thing")).status == 200


def test_auth_with_an_empty_user_as_linK_allows(sup: FakeSupervisor) -> None:
    app = make_app(sup, password="pw", version=VERSION)
    assert wsgi_request(app, "GET", "/ips", headers=basic("", "pw")).status == 200
    assert wsgi_request(app, "GET", "/ips", headers=basic("admin", "pw")).status == 401


def test_every_error_is_json(app: bottle.Bottle, auth_app: bottle.Bottle) -> None:
    cases = [
        (app, "GET", "/ips/bad", None, {}),
        (app, "GET", f"/ips/{UNKNOWN_ID}", None, {}),
        (app, "POST", "/ips", "{", JSON_HEADERS),
        (app, "POST", "/ips", "{}", {"Content-Type": "text/plain"}),
        (app, "PUT", "/version", None, {}),
        (app, "GET", "/missing", None, {}),
        (auth_app, "GET", "/ips", None, {}),
    ]
    for the_app, method, path, body, headers in cases:
        res = wsgi_request(the_app, method, path, body, headers)
        assert res.status >= 400
        assert res.headers["content-type"] == "application/json", (method, path)
        assert "error" in res.json()
