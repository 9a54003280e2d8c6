"""The HTTP API, compatible with LinK v2: a bottle app that relays every request to the supervisor.

The app holds no state. Each request becomes one `call({"op": ...})` whose answer is the
supervisor's (see docs/ARCHITECTURE.md, "Pipe protocol"); the app only checks the input,
maps answers to HTTP, and makes sure every error, bottle's own included, is a JSON object
`{"error": "..."}` served as application/json.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import logging
import re
from typing import Any, Callable, Mapping

import bottle

from link.vip import VipError, parse_vip

log = logging.getLogger(__name__)

Call = Callable[[dict[str, Any]], dict[str, Any]]
Handler = Callable[..., bottle.HTTPResponse]

# A VIP request is a few dozen bytes; the limit only stops a client from making us buffer junk.
MAX_BODY_BYTES = 64 * 1024

JSON_TYPE = "application/json"
AUTH_CHALLENGE = 'Basic realm="link"'
# LinK v2 answers exactly this for an unknown IP id; its Go client keys on the 404 alone.
NOT_FOUND_BODY = {"resource": "IP", "error": "not found"}

_VIP_ID = re.compile(r"vip-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_ADD_EXAMPLE = '{"ip": "198.51.100.50/32"}'

# Fields of LinK's IP model that its Go client always sends, at their zero value when the
# caller set nothing: accepted at that value only, since link has no per-IP health checks or
# intervals. The value is the message given when a caller does set one.
_LINK_ZERO_FIELDS: dict[str, str] = {
    "checks": "health checks are not supported by link",
    "healthcheck_interval": "health checks are not supported by link",
    "keepalive_interval": "the keepalive interval is set per agent (KEEPALIVE_INTERVAL), not per IP",
}


class ApiError(Exception):
    """An answer other than success; `payload` is the JSON body sent with `status`."""

    def __init__(self, status: int, error: str, *, payload: Mapping[str, Any] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.payload: Mapping[str, Any] = payload if payload is not None else {"error": error}


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    # The trailing newline is what LinK's Go encoder writes; it also keeps curl output tidy.
    body = (json.dumps(payload) + "\n").encode("utf-8")
    return bottle.HTTPResponse(body=body, status=status, headers={"Content-Type": JSON_TYPE, **(headers or {})})


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


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


def _check_content_type(content_type: str) -> None:
    # LinK's Go client sends no Content-Type at all, so only a declared non-JSON type is refused.
    media = content_type.split(";", 1)[0].strip().lower()
    if not media or media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json")):
        return
    # `curl -d '{"ip": ...}'` labels its JSON body as a form: that is what users type (and
    # what LinK's README shows), so it is read as JSON; a body that is not JSON still gets 400.
    if media == "application/x-www-form-urlencoded":
        return
    raise ApiError(415, f"Content-Type must be {JSON_TYPE}, not {media} (with curl: -H 'Content-Type: {JSON_TYPE}')")


def read_body(environ: Mapping[str, Any]) -> bytes:
    """The request body, refused before it is read when it is over MAX_BODY_BYTES."""
    raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw_length:
        # waitress de-chunks bodies and sets CONTENT_LENGTH, so no length means no body.
        return b""
    try:
        length = int(raw_length)
        if length < 0:
            raise ValueError(raw_length)
    except ValueError:
        raise ApiError(400, f"Content-Length {raw_length[:40]!r} is not a byte count") from None
    if length > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is {length} bytes, over the {MAX_BODY_BYTES // 1024} KiB limit")
    data: bytes = environ["wsgi.input"].read(length) if length else b""
    if len(data) != length:
        raise ApiError(400, "request body is shorter than its Content-Length")
    return data


def parse_add_body(body: bytes) -> str:
    """The canonical VIP asked for by a `POST /ips` body; ApiError(400) naming what is wrong."""
    if not body.strip():
        raise ApiError(400, f"request body must be a JSON object such as {_ADD_EXAMPLE}")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object such as {_ADD_EXAMPLE}, not a JSON {_json_type_name(data)}")
    for field, value in data.items():
        if field == "ip":
            continue
        if field == "id":
            if not isinstance(value, str):
                raise ApiError(400, f"id must be a string, not a JSON {_json_type_name(value)}")
            if value:
                raise ApiError(400, "id must not be given: the agent chooses the id of a new IP")
        elif field in _LINK_ZERO_FIELDS:
            _check_zero_field(field, value)
        else:
            raise ApiError(400, f"unknown field {field[:60]!r} (a new IP takes only \"ip\")")
    if "ip" not in data:
        raise ApiError(400, f"ip is required, e.g. {_ADD_EXAMPLE}")
    ip = data["ip"]
    if not isinstance(ip, str):
        raise ApiError(400, f"ip must be a string such as \"198.51.100.50/32\", not a JSON {_json_type_name(ip)}")
    try:
        return parse_vip(ip)
    except VipError as exc:
        raise ApiError(400, str(exc)) from None


def _check_zero_field(field: str, value: object) -> None:
    if field == "checks":
        if value is None or value == []:
            return
        if not isinstance(value, list):
            raise ApiError(400, f"checks must be an array, not a JSON {_json_type_name(value)}")
    else:
        if value == 0 and not isinstance(value, bool):
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, f"{field} must be a number, not a JSON {_json_type_name(value)}")
    raise ApiError(400, f"{field}: {_LINK_ZERO_FIELDS[field]}")


def check_vip_id(vip_id: str) -> str:
    if not _VIP_ID.fullmatch(vip_id):
        raise ApiError(400, f"{vip_id[:80]!r} is not an IP id (expected vip-<uuid4>)")
    return vip_id


def _unwrap(answer: object, *, not_found: Mapping[str, Any] | None = None) -> Any:
    """The result of a supervisor answer, or ApiError with the status the supervisor chose."""
    if not isinstance(answer, dict):
        raise RuntimeError(f"the supervisor answered {answer!r:.200}, not a dict")
    if answer.get("ok") is True:
        return answer.get("result")
    status, error = answer.get("status"), answer.get("error")
    message = error if isinstance(error, str) and error else "the supervisor refused the request"
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        log.error("the supervisor answered with status %r (%s); answering 500", status, message)
        status = 500
    if status == 404 and not_found is not None:
        raise ApiError(404, message, payload=not_found)
    raise ApiError(status, message)


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


class _JsonBottle(bottle.Bottle):
    """A Bottle whose own errors (unknown route, wrong method, crash) are JSON, not HTML."""

    def default_error_handler(self, res: bottle.HTTPError) -> bytes:  # type: ignore[override]
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


def make_app(call: Call, *, user: str = "", password: str = "", version: str) -> bottle.Bottle:
    """The API app; `call` sends one request to the supervisor and returns its answer.

    `call` raises TimeoutError or ConnectionError when the supervisor does not answer (503).
    Basic auth is on when `password` is set, as with LinK's USER and PASSWORD.
    """
    app = _JsonBottle()
    expected_user, expected_password = user.encode("utf-8"), password.encode("utf-8")

    if password:

        @app.hook("before_request")
        def authenticate() -> None:
            # A hook rather than a route wrapper, so unknown paths are hidden behind auth too.
            header = bottle.request.environ.get("HTTP_AUTHORIZATION", "")
            if header and credentials_match(header, expected_user, expected_password):
                return
            error = "invalid user or password" if header else "authentication required"
            if header:
                log.info("refused credentials from %s", bottle.request.environ.get("REMOTE_ADDR", "?"))
            raise json_response(401, {"error": error}, {"WWW-Authenticate": AUTH_CHALLENGE})

    @_endpoint
    def list_ips() -> bottle.HTTPResponse:
        return json_response(200, {"ips": _unwrap(call({"op": "list"}))})

    @_endpoint
    def add_ip() -> bottle.HTTPResponse:
        environ = bottle.request.environ
        _check_content_type(environ.get("CONTENT_TYPE", ""))
        ip = parse_add_body(read_body(environ))
        created = _unwrap(call({"op": "add", "ip": ip}))
        log.info("%s added %s", environ.get("REMOTE_ADDR", "?"), ip)
        # LinK answers the bare IP object here, unlike GET /ips/<id> which wraps it.
        return json_response(201, created)

    @_endpoint
    def get_ip(vip_id: str) -> bottle.HTTPResponse:
        found = _unwrap(call({"op": "get", "vip_id": check_vip_id(vip_id)}), not_found=NOT_FOUND_BODY)
        return json_response(200, {"ip": found})

    @_endpoint
    def delete_ip(vip_id: str) -> bottle.HTTPResponse:
        _unwrap(call({"op": "delete", "vip_id": check_vip_id(vip_id)}), not_found=NOT_FOUND_BODY)
        log.info("%s deleted %s", bottle.request.environ.get("REMOTE_ADDR", "?"), vip_id)
        return bottle.HTTPResponse(status=204)

    @_endpoint
    def get_version() -> bottle.HTTPResponse:
        return json_response(200, {"version": version})

    app.route("/ips", "GET", list_ips)
    app.route("/ips", "POST", add_ip)
    app.route("/ips/<vip_id>", "GET", get_ip)
    app.route("/ips/<vip_id>", "DELETE", delete_ip)
    app.route("/version", "GET", get_version)
    return app
