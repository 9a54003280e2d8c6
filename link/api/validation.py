"""Reading and checking what a client sends, before anything reaches the supervisor.

Every refusal is an `ApiError` whose message names the field at fault (`checks[0].port must
be between 1 and 65535`), so a client learns what to fix from one answer. The bodies follow
LinK v2's model (`ip`, `checks`, `healthcheck_interval`; `healthchecks` on update), which is
what its Go client sends, plus link's `fault_policy`.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Mapping

from link.checks import CheckError, validate_checks
from link.vocabulary.fault_policies import NAMES as FAULT_POLICIES
from link.vocabulary import binder_kinds
from link.vocabulary.binder_kinds import SettingError
from link.vocabulary.json_values import json_type_name as json_type_name  # re-exported: link.supervisor.store
from link.vocabulary.leader_keys import LeaderKeyError
from link.vocabulary.leader_keys import check_key as check_leader_key
from link.vocabulary.leader_keys import check_value as check_leader_value
from link.vocabulary.vip import VipError, parse_vip, setting_names

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


def _with_aliases(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(alias for name in names for alias in (_CHECK_FIELDS if name == "checks" else (name,)))


# The fields of a body, read from VipSpec's (link.vocabulary.vip.setting_names) at each
# request, so that a binder kind is taken as soon as it is registered.
def _update_fields() -> tuple[str, ...]:
    return _with_aliases(setting_names(update=True))


def _add_fields() -> tuple[str, ...]:
    """What a new IP takes: `ip`, then every setting (the binder and its kinds' settings last)."""
    return ("ip", *_with_aliases(setting_names()))


class ApiError(Exception):
    """An answer other than success; `payload` is the JSON body sent with `status`."""

    def __init__(self, status: int, error: str, *, payload: Mapping[str, Any] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.payload: Mapping[str, Any] = payload if payload is not None else {"error": error}


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


_NOTIFY_PROGRAM = binder_kinds.Program("notify")  # the shape of a command binder's programs


def _notify(value: object) -> list[str]:
    """A program and its arguments told of every state change (link.worker.notify); null or []
    means the agent's NOTIFY. Whether it may run (SCRIPTS_DIR...) is link.api.admission's."""
    if value is None or value == []:
        return []
    try:
        return _NOTIFY_PROGRAM.read(value, "notify")
    except SettingError as exc:
        raise ApiError(400, str(exc)) from None


# One reader per setting that PATCH may change: its JSON value (present) -> the supervisor's form.
_READERS: dict[str, Callable[[Any], Any]] = {
    "healthcheck_interval": _healthcheck_interval, "fault_policy": _fault_policy, "priority": _priority, "preempt": _preempt,
    "notify": _notify,
}


def _settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The VIP settings given in a body, checked and in the supervisor's form; absent ones are left out."""
    given = [field for field in _CHECK_FIELDS if field in data]
    if len(given) > 1:
        raise ApiError(400, "give the checks as checks or as healthchecks, not both")
    settings: dict[str, Any] = {}
    for name in setting_names(update=True):
        if name == "checks":
            if given:
                settings["checks"] = _checks(data[given[0]], given[0])
        elif name in data:
            settings[name] = _READERS[name](data[name])
    return settings


def _binder(data: Mapping[str, Any]) -> dict[str, Any]:
    """`binder` and its kind's settings, checked (link.vocabulary.binder_kinds); {} when none
    of them is given (the default binder)."""
    carriers = binder_kinds.settings_fields()
    if "binder" not in data and not any(field in data for field in carriers):
        return {}
    binder = data.get("binder")
    if binder is None:
        binder = binder_kinds.DEFAULT
    kinds = binder_kinds.names()
    if not isinstance(binder, str) or binder not in kinds:
        shown = binder[:40] if isinstance(binder, str) else f"a JSON {json_type_name(binder)}"
        raise ApiError(400, f"binder must be one of {', '.join(kinds)}, not {shown!r}" if isinstance(binder, str)
                       else f"binder must be one of {', '.join(kinds)}, not {shown}")
    for field in carriers:
        if data.get(field) is not None and binder != field:
            raise ApiError(400, f"{field} is only used with \"binder\": \"{field}\" (binder is {binder})")
    result: dict[str, Any] = {"binder": binder}
    kind = binder_kinds.KINDS[binder]
    if kind.settings:
        if data.get(binder) is None:
            raise ApiError(400, f'{binder} is required with "binder": "{binder}": {kind.example()}')
        try:
            result[binder] = kind.read(data[binder])
        except SettingError as exc:
            raise ApiError(400, str(exc)) from None
    return result


def _follow(data: Mapping[str, Any]) -> dict[str, Any]:
    """`follow` (a leader key, link.vocabulary.leader_keys) and `follow_value`, checked; {}
    when none is given (the VIP is elected). Set on add only: an update cannot change them."""
    try:
        key = check_leader_key(data.get("follow"))
        value = check_leader_value(data.get("follow_value"), key=key)
    except LeaderKeyError as exc:
        raise ApiError(400, str(exc)) from None
    return {"follow": key, "follow_value": value} if key else {}


def parse_add_body(body: bytes) -> dict[str, Any]:
    """The supervisor's `add` arguments (`ip` canonical, plus the settings given) from a
    `POST /ips` body; ApiError(400) naming what is wrong."""
    data = parse_json_object(body, ADD_EXAMPLE)
    # LinK's Go client sends its model whole: `id` and `keepalive_interval` are read below, for that.
    known = _add_fields()
    for field in data:
        if field not in known and field not in ("id", "keepalive_interval"):
            raise _unknown_field(field, known, "a new IP")
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
    return {"ip": canonical, **_settings(data), **_binder(data), **_follow(data)}


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
    known = _update_fields()
    for field in data:
        if field not in known:
            raise _unknown_field(field, known, "an update")
    if not data:
        raise ApiError(400, f"nothing to update: give {', '.join(known)}, e.g. {UPDATE_EXAMPLE}")
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
