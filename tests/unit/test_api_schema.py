"""The OpenAPI document (link/api/openapi.json) against the app: the same routes, and
schemathesis fuzzing every route through the WSGI app wired as link.api.server wires it (the
webhook allow-list, SCRIPTS_DIR, the reserved-address check), with fakes only at the seams: the
supervisor behind `call`, etcd (FakeEtcd), netlink and DNS. Hostile strings hypothesis seldom
makes (lone surrogates, control characters, invalid UTF-8) are sent in explicit cases.

schemathesis comes with `pip install -e '.[test]'`; without it the fuzzing test fails (it does
not skip), so a CI that lost it says so.
"""
from __future__ import annotations

import base64
import http.client
import json
import re
from typing import Any

import bottle
import pytest

from link.vocabulary import protocol
from link.api import make_app
from link.api.app import openapi_document
from link.api.guard import FailureGuard
from link.api.agents_directory import HOSTS_PREFIX, HostsDirectory
from link.api.reserved import HostAddress, ReservedAddresses
from link.config import load
from link.vocabulary.vip import lock_key
from tests.unit.api_fakes import FakeSupervisor, ip_object, wsgi_request
from tests.unit.fake_etcd import FakeEtcd
from tests.unit.test_api_hostile import serving

try:
    import schemathesis
    from hypothesis import HealthCheck, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )
except ImportError as exc:  # the test below fails with this, instead of the module skipping
    schemathesis = None  # type: ignore[assignment]
    MISSING = str(exc)

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
VERSION = "4.5.6"
TCP_CHECK = {"type": "TCP", "host": "198.51.100.30", "port": 5432}
EVENT = {"time": "2026-11-22T01:02:03.456Z", "from": "STANDBY", "to": "ACTIVATED", "event": "elected",
         "reason": "took the free lock", "source": "worker"}


def app_routes(app: bottle.Bottle) -> set[tuple[str, str]]:
    """(METHOD, /path/{param}) of every route of the app, in OpenAPI's spelling."""
    return {(route.method.upper(), re.sub(r"<(\w+)(?::[^>]*)?>", r"{\1}", route.rule)) for route in app.routes}


def document_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_is_in_the_document_and_every_documented_route_exists() -> None:
    app = make_app(FakeSupervisor(), version=VERSION)
    in_app, in_document = app_routes(app), document_routes(dict(openapi_document()))
    assert in_app - in_document == set(), "routes missing from link/api/openapi.json"
    assert in_document - in_app == set(), "link/api/openapi.json documents routes the app does not have"
    # And the app has them all, so the comparison is not of two empty sets.
    assert ("POST", "/ips/{vip_id}/failover") in in_app and ("GET", "/metrics") in in_app and len(in_app) == 11


def test_the_document_is_served_with_the_agents_version() -> None:
    res = wsgi_request(make_app(FakeSupervisor(), version=VERSION), "GET", "/openapi.json")
    assert res.status == 200 and res.headers["content-type"] == "application/json"
    served = res.json()
    assert served["openapi"].startswith("3.") and served["info"]["version"] == VERSION
    assert served["paths"] == openapi_document()["paths"]
    # Serving does not change the shared copy.
    assert openapi_document()["info"]["version"] != VERSION


def test_the_document_is_package_data() -> None:
    # setup.py lists it in package_data: the installed agent (and the .deb) must carry it.
    setup_py = open("setup.py", encoding="utf-8").read()
    assert '"link.api": ["openapi.json"]' in setup_py
    assert json.loads(json.dumps(openapi_document()))["info"]["title"]


def test_every_operation_documents_its_errors_and_refs_resolve() -> None:
    document = dict(openapi_document())
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in document["components"][ref[0]], ref
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            codes = set(operation["responses"])
            assert "401" in codes, (method, path)  # basic auth applies to every route
            assert "429" in codes, (method, path)  # and so does the failed-login limiter
            assert {"400", "413", "431"} <= codes, (method, path)  # the HTTP server's own refusals
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= codes, (method, path)
            if "{vip_id}" in path:
                assert {"400", "404"} <= codes, (method, path)
    too_many = document["components"]["responses"]["TooManyRequests"]
    assert too_many["headers"]["Retry-After"]["required"] is True


# --- fuzzing ------------------------------------------------------------------------------------

class AnyIdSupervisor(FakeSupervisor):
    """A fake supervisor for fuzzing: most well-formed ids name a VIP, so that random ids reach
    the success answers too (a plain fake would answer 404 to nearly all of them).

    Decided by the id's last digit, the same on every run: even, a VIP this host holds; odd
    below 8, a VIP held elsewhere (failover: 409); otherwise unknown (404).
    """

    def __call__(self, request: protocol.Message) -> protocol.Answer:
        vip_id = getattr(request, "vip_id", None)
        if isinstance(vip_id, str) and vip_id[-1:] in "0123456789abcdef":
            digit = int(vip_id[-1], 16)
            with self._lock:
                if digit % 2 == 0 or digit < 8:
                    self.ips.setdefault(vip_id, {**self._known(vip_id), "id": vip_id})
                    self.events.setdefault(vip_id, [EVENT])
                if digit % 2 and digit < 8:
                    self.failover_errors[vip_id] = "this host does not hold 198.51.100.20/32 (h2 does)"
        answer = super().__call__(request)
        if isinstance(request, protocol.AddIp) and isinstance(answer, protocol.Done):
            with self._lock:  # forget it, so that the next example may add the same address
                self.ips.pop(answer.result["id"], None)
        return answer

    @staticmethod
    def _known(vip_id: str) -> dict[str, Any]:
        return {**ip_object(vip_id, "198.51.100.20/32", "ACTIVATED"), "holder": "h1", "checks": [TCP_CHECK]}


# As link.api.server.run_api wires the app, with fakes at the seams: this host has
# 198.51.100.11 on eth1, a peer h2 publishes 198.51.100.12, a VIP 198.51.100.21/24 is locked in
# etcd, etcd itself is 198.51.100.1; webhooks may only go to https://hooks.example.net.
CONFIG = load({"INTERFACE": "lo", "HOSTNAME": "h1", "ETCD_HOSTS": "http://198.51.100.1:2379",
               "WEBHOOK_ALLOWED_URLS": "https://hooks.example.net"})


def production_app(call: Any, *, password: str = "", guard: FailureGuard | None = None) -> bottle.Bottle:
    etcd = FakeEtcd()
    lease, _ = etcd.client().grant_lease(30)
    etcd.put_raw(HOSTS_PREFIX + "h2", json.dumps({"addresses": ["198.51.100.12", "2001:db8::12"]}), lease)
    etcd.put_raw(lock_key("198.51.100.21/24"), "h2", lease)
    directory = HostsDirectory(etcd.client(), CONFIG.hostname, lambda: ["198.51.100.11"])
    reserved = ReservedAddresses(CONFIG, directory, addresses=lambda: [HostAddress("198.51.100.11", "eth1", None)],
                                 resolver=lambda host: {host})
    return make_app(call, user=CONFIG.user, password=password, version=VERSION, metrics_auth=CONFIG.metrics_auth,
                    guard=guard, webhook_allowed_urls=CONFIG.webhook_allowed_urls, reserved=reserved.check,
                    scripts_dir=CONFIG.scripts_dir)


def test_the_production_wiring_is_what_the_fuzz_meets() -> None:
    """The fakes do answer: a fuzz that never reached these refusals would test less than it says."""
    app = production_app(FakeSupervisor())
    for ip, words in (("198.51.100.11/24", "already an address of this host"), ("198.51.100.12/32", "peer h2"),
                      ("198.51.100.1/32", "address of etcd"), ("198.51.100.21/32", "another prefix length")):
        res = wsgi_request(app, "POST", "/ips", {"ip": ip}, {"Content-Type": "application/json"})
        assert res.status == 409 and words in res.json()["error"], (ip, res.body)
    hook = {"ip": "198.51.100.30/32", "binder": "webhook", "webhook": {"url": "https://evil.example.org/", "secret": "s" * 16}}
    res = wsgi_request(app, "POST", "/ips", hook, {"Content-Type": "application/json"})
    assert res.status == 400 and "WEBHOOK_ALLOWED_URLS" in res.json()["error"]


# Strings hypothesis rarely sends: lone surrogates (as JSON escapes), control characters, line
# separators, invalid UTF-8, in every kind of field. Each must get a 4xx JSON answer.
HOSTILE_BODIES: list[bytes] = [
    json.dumps({"ip": "\udcff"}).encode(),
    json.dumps({"ip": "198.51.100.5\x00"}).encode(),
    json.dumps({"ip": "fe80::1%\udcff"}).encode(),
    json.dumps({"ip": "::ffff:198.51.100.11"}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "fault_policy": "keep\u2028"}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "checks": [{"type": "TCP", "host": "\ud800", "port": 1}]}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "checks": [{"type": "HTTP", "url": "http://198.51.100.9/\udcff\n"}]}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "checks": [{"type": "EXEC", "command": ["\x1b[2J", "\udcff"]}]}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "binder": "command",
                "command": {"activate": ["/etc/link/scripts/\udcff"], "deactivate": ["\x00"]}}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "binder": "webhook",
                "webhook": {"url": "https://hooks.example.net/\udcff", "secret": "\ud800" * 20}}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "binder": "webhook",
                "webhook": {"url": "https://hooks.example.net\r\nHost: x/", "secret": "s" * 20}}).encode(),
    json.dumps({"ip": "198.51.100.5/32", "\udcff": 1}).encode(),
    b'{"ip": "198.51.100.5/32", "fault_policy": "\xff\xfe"}',
    b'{"ip": "\x00"}',
    b"\xef\xbb\xbf{}",
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
@pytest.mark.parametrize("method, path", [("POST", "/ips"), ("PATCH", "/ips/vip-00000000-0000-4000-8000-000000000000")])
def test_hostile_strings_get_a_4xx_json_answer_never_a_5xx(method: str, path: str, body: bytes) -> None:
    sup = AnyIdSupervisor()
    res = wsgi_request(production_app(sup), method, path, body, {"Content-Type": "application/json"})
    assert 400 <= res.status < 500, (res.status, res.body)
    assert res.headers["content-type"] == "application/json" and isinstance(res.json()["error"], str)
    assert not [r for r in sup.requests if r["op"] in ("add", "update")]


@pytest.mark.parametrize("path", ["/ips/vip-\udcff", "/ips/\x00/events", "/ips/vip-\u2028/failover", "/\udcff"])
def test_hostile_paths_get_a_4xx_json_answer_never_a_5xx(path: str) -> None:
    # PATH_INFO as a WSGI server hands it over: the raw bytes, decoded as latin-1.
    raw = path.encode("utf-8", "surrogatepass").decode("latin-1")
    for method in ("GET", "DELETE"):
        res = wsgi_request(production_app(AnyIdSupervisor()), method, raw)
        assert 400 <= res.status < 500 and isinstance(res.json()["error"], str), (method, path, res.status, res.body)


def test_the_servers_own_refusals_are_documented_for_every_route() -> None:
    """431, 413 and 400 come from the HTTP server (a real one on 127.0.0.1), before any route."""
    document = dict(openapi_document())
    with serving() as port:
        for path, item in document["paths"].items():
            for method, operation in item.items():
                if method not in HTTP_METHODS:
                    continue
                url = path.replace("{vip_id}", "vip-00000000-0000-4000-8000-000000000000")
                for headers, body, status in (({"X-Big": "x" * 20000}, b"", 431),
                                              ({"Content-Length": str(2 * 1024 * 1024)}, b"", 413),
                                              ({"Content-Length": "12x"}, b"", 400)):
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    try:
                        conn.putrequest(method.upper(), url, skip_accept_encoding=True)
                        for name, value in headers.items():
                            conn.putheader(name, value)
                        conn.endheaders(body)
                        response = conn.getresponse()
                        answer = json.loads(response.read())
                    finally:
                        conn.close()
                    assert response.status == status and str(status) in operation["responses"], (method, path, status)
                    assert set(answer) == {"error"}, answer


if schemathesis is not None:
    FUZZED_APP = production_app(AnyIdSupervisor())
    SCHEMA = schemathesis.openapi.from_wsgi("/openapi.json", FUZZED_APP)
    CHECKS = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]

    def test_a_429_matches_the_document_retry_after_included() -> None:
        wrong = "Basic " + base64.b64encode(b"ops:not-the-password").decode()
        guard = FailureGuard(max_failures=2)
        schema = schemathesis.openapi.from_dict(json.loads(json.dumps(openapi_document())))
        schema.app = production_app(AnyIdSupervisor(), password="s3cret-horse", guard=guard)
        for _ in range(2):  # through schemathesis's own client: the address it connects from
            assert schema["/version"]["GET"].Case(headers={"Authorization": wrong}).call().status_code == 401
        for path, method in (("/ips", "GET"), ("/ips", "POST"), ("/metrics", "GET"), ("/version", "GET")):
            case = schema[path][method].Case(headers={"Authorization": wrong})
            response = case.call_and_validate(checks=CHECKS)
            headers = {name.lower(): value for name, value in response.headers.items()}
            assert response.status_code == 429 and headers["retry-after"] in ("60", ["60"]), (path, method, headers)

    @SCHEMA.parametrize()
    @settings(
        max_examples=30,
        derandomize=True,  # the same examples on every run: a CI failure can be replayed
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def test_fuzzed_requests_get_no_5xx_and_answers_that_match_the_document(case: Any) -> None:
        # Positive and negative examples: valid bodies must be served, invalid ones refused
        # with a documented 4xx, and every answer must match the document (status, type, body).
        case.call_and_validate(checks=CHECKS)

else:

    def test_fuzzed_requests_get_no_5xx_and_answers_that_match_the_document() -> None:
        pytest.fail(f"schemathesis is not installed ({MISSING}): pip install -e '.[test]'")
