"""The HTTP API, compatible with LinK v2: a bottle app that relays every request to the supervisor.

The app holds no state. Each request becomes one `call(<request>)` (a message of
`link.vocabulary.protocol`) whose answer is the supervisor's; the app only checks the input
(`link.api.validation`), maps answers to HTTP, and makes sure every error, bottle's own
included, is a JSON object `{"error": "..."}` served as application/json. The routes are
described by `link/api/openapi.json`, served at `GET /openapi.json`.
"""
from __future__ import annotations

import base64
import binascii
import copy
import functools
import hmac
import importlib.resources
import json
import logging
from typing import Any, Callable, Mapping

import bottle

from link.api import metrics
from link.api.guard import FailureGuard
from link.config import DEFAULT_SCRIPTS_DIR
from link.security_settings import ScriptUser
from link.api.admission import check_programs, check_webhook_allowed
from link.vocabulary import protocol
from link.api.validation import (
    JSON_TYPE,
    ApiError,
    check_content_type,
    check_failover_body,
    check_vip_id,
    parse_add_body,
    parse_update_body,
    read_body,
)

log = logging.getLogger(__name__)

Call = Callable[[protocol.Message], protocol.Answer]
Handler = Callable[..., bottle.HTTPResponse]

AUTH_CHALLENGE = 'Basic realm="link"'
# LinK v2 answers exactly this for an unknown IP id; its Go client keys on the 404 alone.
NOT_FOUND_BODY = {"resource": "IP", "error": "not found"}


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    # The trailing newline is what LinK's Go encoder writes; it also keeps curl output tidy.
    body = (json.dumps(payload) + "\n").encode("utf-8")
    return bottle.HTTPResponse(body=body, status=status, headers={"Content-Type": JSON_TYPE, **(headers or {})})


@functools.lru_cache(maxsize=1)
def openapi_document() -> Mapping[str, Any]:
    """The OpenAPI 3 description of this API, shipped as package data next to this module."""
    text = importlib.resources.files("link.api").joinpath("openapi.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def present_ip(ip: object) -> object:
    """An IP object as sent to clients."""
    # LinK's Go client decodes healthcheck_interval into an int and fails on "5.0": the
    # supervisor keeps seconds as a float, so a whole number goes out without its ".0".
    if isinstance(ip, dict):
        interval = ip.get("healthcheck_interval")
        if isinstance(interval, float) and interval.is_integer():
            return {**ip, "healthcheck_interval": int(interval)}
    return ip


def credentials_match(header: str, user: bytes, password: bytes) -> bool:
    """Check an Authorization header against the expected Basic credentials in constant time."""
    scheme, _, data = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    got_user, colon, got_password = decoded.partition(b":")
    if not colon:
        return False
    # Both comparisons always run (`&`, not `and`) so the timing does not tell which one failed.
    return hmac.compare_digest(got_user, user) & hmac.compare_digest(got_password, password)


def _unwrap(answer: protocol.Answer, *, not_found: Mapping[str, Any] | None = None) -> Any:
    """The result of a supervisor answer, or ApiError with the status the supervisor chose."""
    if isinstance(answer, protocol.Done):
        return answer.result
    if not isinstance(answer, protocol.Refused):
        raise RuntimeError(f"the supervisor answered {answer!r:.200}, not an answer")
    message = answer.error or "the supervisor refused the request"
    if answer.status == 404 and not_found is not None:
        raise ApiError(404, message, payload=not_found)
    raise ApiError(answer.status, message)


def _endpoint(handler: Handler) -> Handler:
    """Turn every way a handler can fail into a JSON answer; a traceback only goes to the log."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> bottle.HTTPResponse:
        try:
            return handler(*args, **kwargs)
        except ApiError as exc:
            return json_response(exc.status, exc.payload)
        except (TimeoutError, ConnectionError) as exc:
            log.warning("%s %s: no answer from the supervisor: %s", bottle.request.method, bottle.request.path, exc)
            return json_response(503, {"error": f"the link agent's supervisor did not answer: {exc}"})
        except Exception:
            log.exception("%s %s failed", bottle.request.method, bottle.request.path)
            return json_response(500, {"error": "internal error (see the agent's log)"})

    return wrapper


class _JsonBottle(bottle.Bottle):  # type: ignore[misc]  # bottle has no types (no py.typed, no stubs): Bottle is Any
    """A Bottle whose own errors (unknown route, wrong method, crash) are JSON, not HTML."""

    def default_error_handler(self, res: bottle.HTTPError) -> bytes:
        status = res.status_code
        method, path = bottle.request.method, bottle.request.path
        if status >= 500:
            # bottle already wrote the traceback to wsgi.errors; the client gets no detail.
            log.error("%s %s: internal error: %r", method, path, res.exception)
            message = "internal error (see the agent's log)"
        elif status == 404:
            message = f"no such endpoint: {method} {path}"
        elif status == 405:
            message = f"method {method} is not allowed on {path}"
        else:
            message = res.body if isinstance(res.body, str) and res.body else res.status_line
        # res was applied to the thread's response, so its headers (e.g. Allow) are kept.
        bottle.response.content_type = JSON_TYPE
        return (json.dumps({"error": message}) + "\n").encode("utf-8")


def make_app(call: Call, *, user: str = "", password: str = "", version: str, metrics_auth: bool = True,
             guard: FailureGuard | None = None, webhook_allowed_urls: tuple[str, ...] = (),
             reserved: Callable[[str, Callable[[], set[str]]], None] | None = None,
             scripts_dir: str = DEFAULT_SCRIPTS_DIR, script_user: ScriptUser | None = None) -> bottle.Bottle:
    """The API app; `call` sends one request to the supervisor and returns its answer.

    `call` raises TimeoutError or ConnectionError when the supervisor does not answer (503).
    Basic auth is on when `password` is set, as with LinK's USER and PASSWORD; with
    `metrics_auth` False (METRICS_AUTH=false), GET /metrics is open to a scraper without it.
    `guard` counts failed logins per peer (a fresh one by default) and blocks brute force.
    A new VIP's webhook must be on `webhook_allowed_urls` (WEBHOOK_ALLOWED_URLS; none: webhook
    binders are refused), and `reserved(ip, managed_ips)` refuses addresses a VIP must not take
    (link.api.reserved). EXEC checks and command binders name programs of `scripts_dir` only
    (SCRIPTS_DIR, under link.scripts' rules), runnable by `script_user` (SCRIPT_USER; None: as
    this agent's environment says).
    """
    app = _JsonBottle()
    failures = guard if guard is not None else FailureGuard()
    expected_user, expected_password = user.encode("utf-8"), password.encode("utf-8")
    document = copy.deepcopy(dict(openapi_document()))
    # The document describes this very agent: its version is the agent's.
    document["info"] = {**document["info"], "version": version}

    def client() -> str:
        return str(bottle.request.environ.get("REMOTE_ADDR", "?"))

    if password:

        def authenticate() -> None:
            # A hook rather than a route wrapper, so unknown paths are hidden behind auth too.
            if not metrics_auth and bottle.request.path == "/metrics":
                return
            peer = client()
            # A blocked peer is refused before its credentials are even looked at, right ones
            # included: otherwise the 429 would tell a brute force when it guessed right.
            wait = failures.retry_after(peer)
            if wait is not None:
                raise json_response(429, {"error": f"too many failed logins from {peer}: try again in {wait} s"},
                                    {"Retry-After": str(wait)})
            header = bottle.request.environ.get("HTTP_AUTHORIZATION", "")
            if header and credentials_match(header, expected_user, expected_password):
                return
            error = "invalid user or password" if header else "authentication required"
            if header:
                # Only attempts count: a first request without credentials is how clients start.
                failures.failed(peer)
            raise json_response(401, {"error": error}, {"WWW-Authenticate": AUTH_CHALLENGE})

        # add_hook, not the @app.hook decorator: bottle's decorators are untyped.
        app.add_hook("before_request", authenticate)

    @_endpoint
    def list_ips() -> bottle.HTTPResponse:
        ips = _unwrap(call(protocol.ListIps()))
        return json_response(200, {"ips": [present_ip(ip) for ip in ips] if isinstance(ips, list) else ips})

    @_endpoint
    def add_ip() -> bottle.HTTPResponse:
        environ = bottle.request.environ
        check_content_type(environ.get("CONTENT_TYPE", ""))
        request = parse_add_body(read_body(environ))
        check_webhook_allowed(request, webhook_allowed_urls)
        check_programs(request, scripts_dir, run_as=script_user)
        if reserved is not None:
            reserved(request["ip"], lambda: {str(ip.get("ip")) for ip in _unwrap(call(protocol.ListIps())) or ()})
        settings = {name: value for name, value in request.items() if name != "ip"}
        created = _unwrap(call(protocol.AddIp(request["ip"], settings)))
        log.info("%s added %s", client(), request["ip"])
        # LinK answers the bare IP object here, unlike GET /ips/<id> which wraps it.
        return json_response(201, present_ip(created))

    @_endpoint
    def get_ip(vip_id: str) -> bottle.HTTPResponse:
        found = _unwrap(call(protocol.GetIp(check_vip_id(vip_id))), not_found=NOT_FOUND_BODY)
        return json_response(200, {"ip": present_ip(found)})

    @_endpoint
    def update_ip(vip_id: str) -> bottle.HTTPResponse:
        environ = bottle.request.environ
        check_vip_id(vip_id)
        check_content_type(environ.get("CONTENT_TYPE", ""))
        changes = parse_update_body(read_body(environ))
        check_programs(changes, scripts_dir, run_as=script_user)
        updated = _unwrap(call(protocol.UpdateIp(vip_id, changes)), not_found=NOT_FOUND_BODY)
        log.info("%s updated %s: %s", client(), vip_id, ", ".join(sorted(changes)))
        # LinK's PATCH answers the bare IP object, as its POST does.
        return json_response(200, present_ip(updated))

    @_endpoint
    def delete_ip(vip_id: str) -> bottle.HTTPResponse:
        _unwrap(call(protocol.DeleteIp(check_vip_id(vip_id))), not_found=NOT_FOUND_BODY)
        log.info("%s deleted %s", client(), vip_id)
        return bottle.HTTPResponse(status=204)

    @_endpoint
    def failover_ip(vip_id: str) -> bottle.HTTPResponse:
        environ = bottle.request.environ
        check_vip_id(vip_id)
        check_failover_body(read_body(environ), environ.get("CONTENT_TYPE", ""))
        # Answered once this host has unbound the VIP and given up its lock; 409 (passed on
        # as the supervisor words it) when this host does not hold it or no peer competes.
        _unwrap(call(protocol.FailoverIp(vip_id)), not_found=NOT_FOUND_BODY)
        log.info("%s made %s fail over", client(), vip_id)
        return bottle.HTTPResponse(status=204)

    @_endpoint
    def get_events(vip_id: str) -> bottle.HTTPResponse:
        events = _unwrap(call(protocol.GetEvents(check_vip_id(vip_id))), not_found=NOT_FOUND_BODY)
        return json_response(200, {"events": events})

    @_endpoint
    def get_metrics() -> bottle.HTTPResponse:
        answer = _unwrap(call(protocol.GetMetrics()))
        body = metrics.render(answer if isinstance(answer, dict) else {}, version)
        return bottle.HTTPResponse(body=body, status=200, headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})

    @_endpoint
    def get_version() -> bottle.HTTPResponse:
        return json_response(200, {"version": version})

    @_endpoint
    def get_openapi() -> bottle.HTTPResponse:
        return json_response(200, document)

    app.route("/ips", "GET", list_ips)
    app.route("/ips", "POST", add_ip)
    app.route("/ips/<vip_id>", "GET", get_ip)
    # LinK's client sends PATCH; PUT is the same partial update (settings not given are kept).
    app.route("/ips/<vip_id>", "PATCH", update_ip)
    app.route("/ips/<vip_id>", "PUT", update_ip)
    app.route("/ips/<vip_id>", "DELETE", delete_ip)
    app.route("/ips/<vip_id>/failover", "POST", failover_ip)
    app.route("/ips/<vip_id>/events", "GET", get_events)
    app.route("/metrics", "GET", get_metrics)
    app.route("/version", "GET", get_version)
    app.route("/openapi.json", "GET", get_openapi)
    return app
