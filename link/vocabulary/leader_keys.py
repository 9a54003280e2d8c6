"""A VIP that follows a leader key (vip-manager's trigger-key and trigger-value): the forms taken.

Patroni keeps its leader key at `/<namespace>/<scope>/leader` (namespace `/service` unless
set) and writes its member name there. A VIP created with `follow` is bound on the host whose
`follow_value` (default: the agent's HOSTNAME) is the key's value. The key is checked here,
once, for the API and the state file alike: an absolute path of printable ASCII without white
space, empty segments, `.` or `..`, at most MAX_KEY_CHARS characters, and never under link's
own `/link/` directory (a VIP following another VIP's lock would bind beside its holder, and
link's keys are no leader's).
"""
from __future__ import annotations

from link.vocabulary.json_values import json_type_name
from link.vocabulary.vip import ETCD_DIRECTORY

MAX_KEY_CHARS = 255
MAX_VALUE_CHARS = 253  # a host name's limit (DNS); Patroni's member names are host names by custom
PATRONI_EXAMPLE = "/service/<scope>/leader"


class LeaderKeyError(ValueError):
    """A `follow` or `follow_value` the agent does not take; the message names the field."""


def check_key(value: object) -> str:
    """The leader key to follow, as given; "" (or None) means none: the VIP is elected."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise LeaderKeyError(f"follow must be an etcd key such as {PATRONI_EXAMPLE}, not a JSON {json_type_name(value)}")
    if len(value) > MAX_KEY_CHARS:
        raise LeaderKeyError(f"follow must be at most {MAX_KEY_CHARS} characters, not {len(value)}")
    if not value.startswith("/"):
        raise LeaderKeyError(f"follow must be an absolute key (starting with /) such as {PATRONI_EXAMPLE}")
    if not all("!" <= c <= "~" for c in value):
        raise LeaderKeyError("follow must be printable ASCII without white space (as Patroni's keys are)")
    segments = value[1:].split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise LeaderKeyError(f"follow must not have an empty, '.' or '..' segment (nor end with /): {value[:60]!r}")
    if segments[0] == ETCD_DIRECTORY.strip("/"):
        raise LeaderKeyError(f"follow must not be under {ETCD_DIRECTORY}/: those keys are link's own, not a leader's")
    return value


def check_value(value: object, *, key: str) -> str:
    """The value that means "this host"; "" (or None) means the agent's HOSTNAME. Only with a key."""
    if value is None or value == "":
        return ""
    if not key:
        raise LeaderKeyError("follow_value is only used with follow (the leader key whose value it is)")
    if not isinstance(value, str):
        raise LeaderKeyError(f"follow_value must be a string (Patroni's member name), not a JSON {json_type_name(value)}")
    if len(value) > MAX_VALUE_CHARS:
        raise LeaderKeyError(f"follow_value must be at most {MAX_VALUE_CHARS} characters, not {len(value)}")
    if not value.isprintable() or value != value.strip():
        raise LeaderKeyError("follow_value must be printable, without leading or trailing white space")
    return value
