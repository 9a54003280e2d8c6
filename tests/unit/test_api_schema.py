"""The OpenAPI document (link/api/openapi.json) against the app: the same routes, and
schemathesis fuzzing every route through the WSGI app with a fake supervisor behind `call`.

schemathesis comes with `pip install -e '.[test]'`; without it the fuzzing test fails (it does
not skip), so a CI that lost it says so.
"""
from __future__ import annotations

import json
import re
from typing import Any

import bottle
import pytest

from link.api import make_app
from link.api.app import openapi_document
from tests.unit.api_fakes import FakeSupervisor, ip_object, wsgi_request

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
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= codes, (method, path)
            if "{vip_id}" in path:
                assert {"400", "404"} <= codes, (method, path)


# --- fuzzing ------------------------------------------------------------------------------------

class AnyIdSupervisor(FakeSupervisor):
    """A fake supervisor for fuzzing: most well-formed ids name a VIP, so that random ids reach
    the success answers too (a plain fake would answer 404 to nearly all of them).

    Decided by the id's last digit, the same on every run: even, a VIP this host holds; odd
    below 8, a VIP held elsewhere (failover: 409); otherwise unknown (404).
    """

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        vip_id = request.get("vip_id")
        if isinstance(vip_id, str) and vip_id[-1:] in "0123456789abcdef":
            digit = int(vip_id[-1], 16)
            with self._lock:
                if digit % 2 == 0 or digit < 8:
                    self.ips.setdefault(vip_id, {**self._known(vip_id), "id": vip_id})
                    self.events.setdefault(vip_id, [EVENT])
                if digit % 2 and digit < 8:
                    self.failover_errors[vip_id] = "this host does not hold 198.51.100.20/32 (h2 does)"
        answer = super().__call__(request)
        if request.get("op") == "add" and answer["ok"]:
            with self._lock:  # forget it, so that the next example may add the same address
                self.ips.pop(answer["result"]["id"], None)
        return answer

    @staticmethod
    def _known(vip_id: str) -> dict[str, Any]:
        return {**ip_object(vip_id, "198.51.100.20/32", "ACTIVATED"), "holder": "h1", "checks": [TCP_CHECK]}


if schemathesis is not None:
    FUZZED_APP = make_app(AnyIdSupervisor(), version=VERSION)
    SCHEMA = schemathesis.openapi.from_wsgi("/openapi.json", FUZZED_APP)
    CHECKS = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]

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
