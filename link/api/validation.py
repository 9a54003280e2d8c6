"""Reading and checking what a client sends, before anything reaches the supervisor.

Every refusal is an `ApiError` whose message names the field at fault (`checks[0].port must
be between 1 and 65535`), so a client learns what to fix from one answer. The bodies follow
LinK v2's model (`ip`, `checks`, `healthcheck_interval`; `healthchecks` on update), which is
what its Go client sends, plus link's `fault_policy`.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping
from urllib.parse import urlsplit

from link.checks import CheckError, utf8, validate_checks
from link.config import FAULT_POLICIES
from link.vocabulary.vip import BINDERS, VipError, parse_vip

# A VIP request is a few hundred bytes; the limit only stops a client from making us buffer junk.
MAX_BODY_BYTES = 64 * 1024

JSON_TYPE = "application/json"

# The agent's own HEALTH_CHECK_INTERVAL has this range; below 0.1 s the worker's check thread
# would spin, above an hour a failing service would go unnoticed for too long.
MIN_HEALTHCHECK_INTERVAL = 0.1
MAX_HEALTHCHECK_INTERVAL = 3600.0

ADD_EXAMPLE = '{"ip": "198.51.100.50/32"}'
UPDATE_EXAMPLE = '{"healthchecks": [{"type": "TCP", "host": "198.51.100.20", "port": 5432}]}'

_VIP_ID = re.compile(r"vip-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# LinK calls the checks `checks` when an IP is created and `healthchecks` when they are
# replaced (PATCH); both names are taken on both routes, one at a time.
_CHECK_FIELDS = ("checks", "healthchecks")
_SETTINGS = (*_CHECK_FIELDS, "healthcheck_interval", "fault_policy", "priority", "preempt")
# How the VIP is put in place: chosen when it is added (to change it, delete the VIP and add it again).
_BINDER_FIELDS = ("binder", "command", "webhook")
_ADD_FIELDS = ("ip", "id", "keepalive_interval", *_SETTINGS, *_BINDER_FIELDS)

# The command binder's programs and the webhook's request, bounded so one VIP cannot stall
# its own binder for long; defaults are the README's.
COMMAND_ACTIONS = ("activate", "deactivate", "ensure")
COMMAND_FIELDS = (*COMMAND_ACTIONS, "timeout", "ensure_interval")
COMMAND_TIMEOUT = (10.0, 0.1, 600.0)  # default, min, max (seconds)
ENSURE_INTERVAL = (30.0, 1.0, 86400.0)
MAX_ARGS = 64
MAX_ARG_LENGTH = 4096
WEBHOOK_FIELDS = ("url", "secret", "timeout")
WEBHOOK_TIMEOUT = (5.0, 0.1, 60.0)
MIN_SECRET, MAX_SECRET = 16, 1024
MAX_URL = 2048


class ApiError(Exception):
    """An answer other than success; `payload` is the JSON body sent with `status`."""

    def __init__(self, status: int, error: str, *, payload: Mapping[str, Any] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.payload: Mapping[str, Any] = payload if payload is not None else {"error": error}


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for messages such as "not a JSON string"."""
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


def check_content_type(content_type: str) -> None:
    """Refuse a body declared as something other than JSON (415)."""
    # LinK's Go client sends no Content-Type at all, so only a declared non-JSON type is refused.
    media = content_type.split(";", 1)[0].strip().lower()
    if not media or media == JSON_TYPE or (media.startswith("application/") and media.endswith("+json")):
        return
    # `curl -d '{"ip": ...}'` labels its JSON body as a form: that is what users type (and
    # what LinK's README shows), so it is read as JSON; a body that is not JSON still gets 400.
    if media == "application/x-www-form-urlencoded":
        return
    raise ApiError(415, f"Content-Type must be {JSON_TYPE}, not {media[:80]} (with curl: -H 'Content-Type: {JSON_TYPE}')")


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


def _refuse_constant(name: str) -> float:
    # Python's json reads NaN and Infinity, which are not JSON: a client sending them has a bug.
    raise ValueError(f"{name} is not a JSON value")


def parse_json_object(body: bytes, example: str) -> dict[str, Any]:
    """The body as a JSON object; ApiError(400) saying what is wrong with it otherwise."""
    if not body.strip():
        raise ApiError(400, f"request body must be a JSON object such as {example}")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object such as {example}, not a JSON {json_type_name(data)}")
    return data


def check_vip_id(vip_id: str) -> str:
    if not _VIP_ID.fullmatch(vip_id):
        raise ApiError(400, f"{vip_id[:80]!r} is not an IP id (expected vip-<uuid4>)")
    return vip_id


def _unknown_field(field: str, allowed: tuple[str, ...], what: str) -> ApiError:
    return ApiError(400, f"unknown field {field[:60]!r} ({what} takes {', '.join(allowed)})")


def _checks(value: object, field: str) -> list[dict[str, Any]]:
    try:
        return validate_checks(value, field)
    except CheckError as exc:
        raise ApiError(400, str(exc)) from None
    except ValueError as exc:
        # validate_checks names the field in its own errors; anything else it lets through
        # (a parser deeper down refusing the text) is still the client's input, not a crash.
        raise ApiError(400, f"{field}: {str(exc)[:200]}") from None


def _healthcheck_interval(value: object) -> float:
    """Seconds between two rounds of checks; 0 (or null) means the agent's HEALTH_CHECK_INTERVAL."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"healthcheck_interval must be a number of seconds, not a JSON {json_type_name(value)}")
    seconds = float(value)
    if seconds == 0:
        return 0.0
    if not (math.isfinite(seconds) and MIN_HEALTHCHECK_INTERVAL <= seconds <= MAX_HEALTHCHECK_INTERVAL):
        raise ApiError(
            400,
            f"healthcheck_interval must be 0 (the agent's HEALTH_CHECK_INTERVAL) or between "
            f"{MIN_HEALTHCHECK_INTERVAL:g} and {MAX_HEALTHCHECK_INTERVAL:g} seconds",
        )
    return seconds


def _fault_policy(value: object) -> str:
    """What the VIP does when etcd is unreachable; "" (or null) means the agent's FAULT_POLICY."""
    if value is None or value == "":
        return ""
    if isinstance(value, str) and value in FAULT_POLICIES:
        return value
    choices = ", ".join(FAULT_POLICIES)
    if not isinstance(value, str):
        raise ApiError(400, f"fault_policy must be a string, one of {choices}, not a JSON {json_type_name(value)}")
    raise ApiError(400, f"fault_policy must be one of {choices} (or \"\" for the agent's FAULT_POLICY), not {value[:40]!r}")


def _priority(value: object) -> int | None:
    """The VIP's own priority, 0-255, lowest wins; null means the host's PRIORITY."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"priority must be a whole number from 0 to 255 (lowest wins), not a JSON {json_type_name(value)}")
    if not 0 <= value <= 255:
        raise ApiError(400, f"priority must be from 0 to 255 (lowest wins), not {value}")
    return value


def _preempt(value: object) -> bool | None:
    """Whether a better host takes the VIP over from this one; null means the agent's PREEMPT."""
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(400, f"preempt must be true, false or null, not a JSON {json_type_name(value)}")


def _settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The VIP settings given in a body, checked and in the supervisor's form; absent ones are left out."""
    given = [field for field in _CHECK_FIELDS if field in data]
    if len(given) > 1:
        raise ApiError(400, "give the checks as checks or as healthchecks, not both")
    settings: dict[str, Any] = {}
    if given:
        settings["checks"] = _checks(data[given[0]], given[0])
    if "healthcheck_interval" in data:
        settings["healthcheck_interval"] = _healthcheck_interval(data["healthcheck_interval"])
    if "fault_policy" in data:
        settings["fault_policy"] = _fault_policy(data["fault_policy"])
    if "priority" in data:
        settings["priority"] = _priority(data["priority"])
    if "preempt" in data:
        settings["preempt"] = _preempt(data["preempt"])
    return settings


def _seconds(value: object, field: str, limits: tuple[float, float, float]) -> float:
    default, low, high = limits
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{field} must be a number of seconds, not a JSON {json_type_name(value)}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ApiError(400, f"{field} must be between {low:g} and {high:g} seconds (default {default:g})")
    return float(value)


def _argv(value: object, field: str) -> list[str]:
    """A program and its arguments: run without a shell, so the first is an absolute path
    (whether it may run is `link.api.admission.check_programs`' business, as it depends on the host's files)."""
    example = '["/etc/link/scripts/fip", "attach"]'
    if not isinstance(value, list) or not value:
        raise ApiError(400, f"{field} must be a non-empty list of strings (a program and its arguments, no shell), e.g. {example}")
    if len(value) > MAX_ARGS:
        raise ApiError(400, f"{field} has {len(value)} items; at most {MAX_ARGS}")
    for i, part in enumerate(value):
        if not isinstance(part, str) or not part:
            raise ApiError(400, f"{field}[{i}] must be a non-empty string")
        if len(part) > MAX_ARG_LENGTH or "\0" in part:
            raise ApiError(400, f"{field}[{i}] must be at most {MAX_ARG_LENGTH} characters, without NUL")
        if not utf8(part):
            raise ApiError(400, f"{field}[{i}] must be valid UTF-8 text (no lone surrogate): exec takes bytes")
    if not os.path.isabs(value[0]):
        raise ApiError(400, f"{field}[0] must be an absolute path in SCRIPTS_DIR (there is no shell to search PATH)")
    return list(value)


def _object(value: object, field: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{field} must be an object with {', '.join(allowed)}, not a JSON {json_type_name(value)}")
    for key in value:
        if key not in allowed:
            raise ApiError(400, f"unknown field {field}.{key[:60]!r} ({field} takes {', '.join(allowed)})")
    return value


def _command(value: object) -> dict[str, Any]:
    settings = _object(value, "command", COMMAND_FIELDS)
    for required in ("activate", "deactivate"):
        if settings.get(required) is None:
            raise ApiError(400, f"command.{required} is required: the program to run on {required}")
    return {
        "activate": _argv(settings["activate"], "command.activate"),
        "deactivate": _argv(settings["deactivate"], "command.deactivate"),
        "ensure": None if settings.get("ensure") is None else _argv(settings["ensure"], "command.ensure"),
        "timeout": _seconds(settings.get("timeout"), "command.timeout", COMMAND_TIMEOUT),
        "ensure_interval": _seconds(settings.get("ensure_interval"), "command.ensure_interval", ENSURE_INTERVAL),
    }


def _webhook(value: object) -> dict[str, Any]:
    settings = _object(value, "webhook", WEBHOOK_FIELDS)
    url = settings.get("url")
    if not isinstance(url, str) or not url:
        raise ApiError(400, "webhook.url is required: the http:// or https:// URL to POST to")
    if len(url) > MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        raise ApiError(400, f"webhook.url must be at most {MAX_URL} printable characters, without spaces")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ApiError(400, "webhook.url is not a valid URL (check its host and port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApiError(400, "webhook.url must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # The URL is shown by the API: credentials do not belong in it (the secret signs the request).
        raise ApiError(400, "webhook.url must not contain a user or password (the API shows the URL; the secret signs requests)")
    if parts.fragment:
        raise ApiError(400, "webhook.url must not have a #fragment")
    secret = settings.get("secret")
    # Never echo the secret in a message: it would end up in logs and terminals.
    if not isinstance(secret, str):
        raise ApiError(400, "webhook.secret is required: a string the receiver shares, to check the signature")
    if not MIN_SECRET <= len(secret) <= MAX_SECRET or not secret.isprintable():
        raise ApiError(400, f"webhook.secret must be {MIN_SECRET} to {MAX_SECRET} printable characters "
                            "(e.g. the output of `openssl rand -hex 32`)")
    return {"url": url, "secret": secret, "timeout": _seconds(settings.get("timeout"), "webhook.timeout", WEBHOOK_TIMEOUT)}


def _binder(data: Mapping[str, Any]) -> dict[str, Any]:
    """`binder` and its settings, checked; {} when none of them is given (the arp binder)."""
    if not any(field in data for field in _BINDER_FIELDS):
        return {}
    binder = data.get("binder")
    if binder is None:
        binder = "arp"
    if not isinstance(binder, str) or binder not in BINDERS:
        shown = binder[:40] if isinstance(binder, str) else f"a JSON {json_type_name(binder)}"
        raise ApiError(400, f"binder must be one of {', '.join(BINDERS)}, not {shown!r}" if isinstance(binder, str)
                       else f"binder must be one of {', '.join(BINDERS)}, not {shown}")
    for kind in ("command", "webhook"):
        if data.get(kind) is not None and binder != kind:
            raise ApiError(400, f"{kind} is only used with \"binder\": \"{kind}\" (binder is {binder})")
    result: dict[str, Any] = {"binder": binder}
    if binder == "command":
        if data.get("command") is None:
            raise ApiError(400, 'command is required with "binder": "command": {"activate": [...], "deactivate": [...]}')
        result["command"] = _command(data["command"])
    elif binder == "webhook":
        if data.get("webhook") is None:
            raise ApiError(400, 'webhook is required with "binder": "webhook": {"url": "https://...", "secret": "..."}')
        result["webhook"] = _webhook(data["webhook"])
    return result


def parse_add_body(body: bytes) -> dict[str, Any]:
    """The supervisor's `add` arguments (`ip` canonical, plus the settings given) from a
    `POST /ips` body; ApiError(400) naming what is wrong."""
    data = parse_json_object(body, ADD_EXAMPLE)
    for field in data:
        if field not in _ADD_FIELDS:
            raise _unknown_field(field, ("ip", *_SETTINGS, *_BINDER_FIELDS), "a new IP")
    if "id" in data:
        # LinK's Go client sends its model whole, with "id": "" for a new IP.
        if not isinstance(data["id"], str):
            raise ApiError(400, f"id must be a string, not a JSON {json_type_name(data['id'])}")
        if data["id"]:
            raise ApiError(400, "id must not be given: the agent chooses the id of a new IP")
    if "keepalive_interval" in data:
        _keepalive_interval(data["keepalive_interval"])
    if "ip" not in data:
        raise ApiError(400, f"ip is required, e.g. {ADD_EXAMPLE}")
    ip = data["ip"]
    if not isinstance(ip, str):
        raise ApiError(400, f"ip must be a string such as \"198.51.100.50/32\", not a JSON {json_type_name(ip)}")
    try:
        canonical = parse_vip(ip)
    except VipError as exc:
        raise ApiError(400, str(exc)) from None
    return {"ip": canonical, **_settings(data), **_binder(data)}


def _keepalive_interval(value: object) -> None:
    # Older LinK clients send their model's keepalive_interval, at 0 when the caller set none.
    # It is accepted at that value only: the lease is the agent's KEEPALIVE_INTERVAL, the same
    # for every VIP, so silently ignoring another value would mislead the caller.
    if value is None or (value == 0 and not isinstance(value, bool)):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"keepalive_interval must be a number, not a JSON {json_type_name(value)}")
    raise ApiError(400, "keepalive_interval: the lease is set per agent (KEEPALIVE_INTERVAL), not per IP; send 0 or leave it out")


def parse_update_body(body: bytes) -> dict[str, Any]:
    """The supervisor's `update` arguments from a `PUT`/`PATCH /ips/<id>` body.

    Only the settings given change: LinK's client sends `{"healthchecks": [...]}` alone, and
    `{"healthchecks": null}` (or `[]`) removes every check.
    """
    data = parse_json_object(body, UPDATE_EXAMPLE)
    for field in data:
        if field not in _SETTINGS:
            raise _unknown_field(field, _SETTINGS, "an update")
    if not data:
        raise ApiError(400, f"nothing to update: give {', '.join(_SETTINGS)}, e.g. {UPDATE_EXAMPLE}")
    return _settings(data)


def check_failover_body(body: bytes, content_type: str) -> None:
    """A failover takes no input: no body (LinK's client sends none), or an empty JSON object."""
    if not body.strip():
        return
    check_content_type(content_type)
    data = parse_json_object(body, "{}")
    if data:
        field = next(iter(data))
        raise ApiError(400, f"unknown field {field[:60]!r} (a failover takes no field: send no body, or {{}})")
