"""Every message on the supervisor's pipes, defined once (docs/ARCHITECTURE.md, "Pipe protocol").

Four families travel on multiprocessing pipes: the API process's requests and the supervisor's
answers to them, the supervisor's commands to a worker and the worker's reports. Each message
is a frozen dataclass registered here; what crosses the pipe stays a plain dict (cheap to
pickle, readable in a debugger) that only `encode` builds and only `decode` reads. `decode`
refuses a message it does not know, or one with a field missing, unknown or of the wrong
type, with one ProtocolError naming it, so that a handler never meets a half-formed message.

Adding a message is one class here (`@message(family, kind)`) and one handler in the
table of the process that receives it (`Dispatcher`). `python -m link.vocabulary.protocol` prints the
table docs/ARCHITECTURE.md shows; a unit test keeps the two equal.

A leaf module: the supervisor, the API process and the workers import it; it imports only the
standard library, so the supervisor never loads a worker's libraries (gRPC, scapy) through it.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, TypeVar, Union

from link.vocabulary.vip import SettingNames
from link.vocabulary.wire_views import HeardPeer


class Family(enum.Enum):
    """Who sends to whom, and the wire key that names the message."""

    REQUEST = ("op", "API process → supervisor")
    ANSWER = ("ok", "supervisor → API process")
    COMMAND = ("type", "supervisor → worker")
    REPORT = ("type", "worker → supervisor")

    def __init__(self, key: str, label: str) -> None:
        self.key = key
        self.label = label


class ProtocolError(ValueError):
    """A message that is not in this protocol; the text says what is wrong with it.

    `request_id` is the id of a request that could not be read, when it has one, so the
    supervisor can still answer it (400) instead of leaving the API process waiting."""

    def __init__(self, text: str, request_id: int | None = None) -> None:
        super().__init__(text)
        self.request_id = request_id


@dataclass(frozen=True)
class Message:
    family: ClassVar[Family]
    kind: ClassVar[str | bool]  # the value of the family's key on the wire
    # Per field: a check of the value's runtime type (filled in by @message).
    checks: ClassVar[dict[str, Callable[[object], bool]]]

    def __post_init__(self) -> None:
        # The sender learns of a setting the protocol does not carry, not the supervisor.
        for f in dataclasses.fields(self):
            unknown = sorted(set(getattr(self, f.name)) - set(f.metadata[SPREAD])) if SPREAD in f.metadata else []
            if unknown:
                raise ProtocolError(f"{self.family.label} {self.kind!r}: unknown field(s) {', '.join(map(repr, unknown))}")


M = TypeVar("M", bound=Message)
_REGISTRY: dict[Family, dict[str | bool, type[Message]]] = {family: {} for family in Family}

# Field metadata: the field's name on the wire when it differs (a Python keyword), or the
# names of the keys a mapping field spreads over the top level of the message.
WIRE = "wire"
SPREAD = "spread"
ITEMS = "items"  # a tuple of frozen dataclasses (this one), a list of plain dicts on the pipe


@typing.dataclass_transform(frozen_default=True, field_specifiers=(field,))
def message(family: Family, kind: str | bool) -> Callable[[type[M]], type[M]]:
    """Make a class a frozen dataclass and register it as a message of `family` and `kind`."""

    def register(cls: type[M]) -> type[M]:
        if kind in _REGISTRY[family]:
            raise TypeError(f"{family.label} {kind!r} is defined twice")
        cls = dataclass(frozen=True)(cls)
        cls.family, cls.kind = family, kind
        hints = typing.get_type_hints(cls)
        cls.checks = {f.name: _accepts(hints[f.name]) for f in dataclasses.fields(cls)}
        _REGISTRY[family][kind] = cls
        return cls

    return register


def _accepts(hint: Any) -> Callable[[object], bool]:
    """A check of a value against a field's type: the few types the protocol uses."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return lambda value: True
    if origin in (Union, types.UnionType):
        options = [_accepts(arg) for arg in typing.get_args(hint)]
        return lambda value: any(check(value) for check in options)
    if hint is type(None):
        return lambda value: value is None
    base = origin or hint
    if base is float:
        return lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if base in (dict, collections.abc.Mapping):
        return lambda value: isinstance(value, dict)
    return lambda value: isinstance(value, base)


# The VIP settings a request may carry (the API validated them; the supervisor builds the
# spec): VipSpec's fields say which (link.vocabulary.vip.setting_names).
ADD_SETTINGS = SettingNames()
UPDATE_SETTINGS = SettingNames(update=True)


def _spread(names: collections.abc.Sequence[str]) -> Any:
    # Not in the repr: a webhook binder's settings hold its secret, and no log line may.
    return field(default_factory=dict, metadata={SPREAD: names}, repr=False)


def _item(cls: type[Any], raw: object, where: str) -> Any:
    """One element of an ITEMS field, checked as strictly as a message's own fields."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where}: an item is {raw!r:.50}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    rest = dict(raw)
    for f in dataclasses.fields(cls):
        if f.name not in rest:
            if f.default is dataclasses.MISSING:
                raise ProtocolError(f"{where}: an item lacks {f.name!r}")
            continue
        value = rest.pop(f.name)
        if not _accepts(hints[f.name])(value):
            raise ProtocolError(f"{where}: an item's {f.name!r} is {value!r:.50}")
        values[f.name] = value
    if rest:
        raise ProtocolError(f"{where}: an item has unknown field(s) {', '.join(map(repr, sorted(rest)))}")
    return cls(**values)


# -- API process -> supervisor: {"op": kind, "id": <int>, ...} ------------------------------
@message(Family.REQUEST, "list")
class ListIps(Message):
    """`[ip_object, ...]`"""


@message(Family.REQUEST, "get")
class GetIp(Message):
    """`ip_object` with `candidates` (from the worker; `candidates_error` when etcd could not say)"""

    vip_id: str


@message(Family.REQUEST, "add")
class AddIp(Message):
    """`ip_object` (status `BOOTING`); the API validated the settings and filled in defaults"""

    ip: str  # already normalised CIDR
    settings: Mapping[str, Any] = _spread(ADD_SETTINGS)


@message(Family.REQUEST, "update")
class UpdateIp(Message):
    """`ip_object`; the worker applies the new settings live"""

    vip_id: str
    settings: Mapping[str, Any] = _spread(UPDATE_SETTINGS)


@message(Family.REQUEST, "delete")
class DeleteIp(Message):
    """`None`, sent only after the worker released the VIP"""

    vip_id: str


@message(Family.REQUEST, "failover")
class FailoverIp(Message):
    """`None` once this host unbound the VIP and freed the lock; 409 if it does not hold it or no other host competes"""

    vip_id: str


@message(Family.REQUEST, "events")
class GetEvents(Message):
    """`[{"time", "from", "to", "event", "reason", "source"}, ...]`, oldest first (the last 100)"""

    vip_id: str


@message(Family.REQUEST, "metrics")
class GetMetrics(Message):
    """`{"workers": <running>, "vips": [{"id", "ip", "status", "since", "worker_state", "restarts", "metrics"}]}`"""


@message(Family.REQUEST, "listening")
class ApiListening(Message):
    """`None`: the API process listens (the supervisor tells systemd READY once its workers booted too)"""


@message(Family.REQUEST, "wire_peers")
class WirePeers(Message):
    """`None`: the peers' heartbeat endpoints `[{"address", "port"}]` published in etcd (`/link/agents/`), read every 10 s"""

    endpoints: list[dict[str, Any]]


Request = Union[ListIps, GetIp, AddIp, UpdateIp, DeleteIp, FailoverIp, GetEvents, GetMetrics, ApiListening, WirePeers]


# -- supervisor -> API process: the answer to the request with the same id ------------------
@message(Family.ANSWER, True)
class Done(Message):
    """the request's result (above)"""

    id: int
    result: Any = None


@message(Family.ANSWER, False)
class Refused(Message):
    """the status the API answers (400, 404, 409, 503) and a sentence for people"""

    id: int
    status: int
    error: str

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 400 <= self.status <= 599:
            raise ProtocolError(f"a refusal with status {self.status}, not 4xx or 5xx")


Answer = Union[Done, Refused]


# -- supervisor -> worker: {"type": kind, ...} ----------------------------------------------
@message(Family.COMMAND, "stop")
class Stop(Message):
    """release the VIP (unbind, free the lock) and exit"""


@message(Family.COMMAND, "settings")
class Settings(Message):
    """the VIP's new settings (`VipSpec.to_json()`), applied live"""

    spec: dict[str, Any] = field(repr=False)  # holds a webhook binder's secret


@message(Family.COMMAND, "log_level")
class LogLevel(Message):
    """LOGGER_LEVEL changed (SIGHUP)"""

    level: str


@message(Family.COMMAND, "priority")
class Priority(Message):
    """the host's priority changed (SIGUSR1, SIGUSR2, SIGHUP); a VIP's own priority wins"""

    priority: int


@message(Family.COMMAND, "candidates")
class ReadCandidates(Message):
    """read the candidates from etcd for `GET /ips/<id>`; answered by `candidates_done`"""

    request: int  # the API request's id


@message(Family.COMMAND, "failover")
class HandOver(Message):
    """give the VIP to another host; answered by `failover_done`"""

    request: int


# -- worker -> supervisor: {"type": kind, ...} ----------------------------------------------
@message(Family.REPORT, "state")
class StateReport(Message):
    """on every transition and whenever the known holder or priority changes; an event when `from` differs from `state`"""

    state: str
    since: float  # unix time
    event: str | None = None
    holder: str | None = None
    reason: str = ""
    priority: int | None = None  # the VIP's effective priority
    previous: str | None = field(default=None, metadata={WIRE: "from"})  # None in the first report
    metrics: dict[str, Any] | None = None  # as in `metrics`
    binder_status: dict[str, Any] | None = None  # as in `binder`


@message(Family.REPORT, "binder")
class BinderReport(Message):
    """whenever the binder's status changes: `{"ok", "action", "error", "attempts", "since"}`"""

    binder_status: dict[str, Any] | None


@message(Family.REPORT, "metrics")
class MetricsReport(Message):
    """the worker's counters (plain numbers), every 5 s"""

    metrics: dict[str, Any]


@message(Family.REPORT, "boot_failed")
class BootFailed(Message):
    """before exiting when the VIP cannot be put in place on this host"""

    error: str


@message(Family.REPORT, "candidates_done")
class CandidatesDone(Message):
    """the answer to `candidates`: `[{"host", "priority", "state"}, ...]`, `error` "" when etcd answered"""

    request: int
    candidates: list[dict[str, Any]]
    error: str = ""


@message(Family.REPORT, "failover_done")
class FailoverDone(Message):
    """the answer to `failover`: 204, or the status and sentence the API answers"""

    request: int
    status: int
    error: str = ""


@message(Family.REPORT, "heartbeat")
class Heartbeat(Message):
    """alive: from the main loop's tick when nothing else went up for a lease; a worker silent for 3 leases (5 s at least) is replaced"""


@message(Family.REPORT, "claim")
class ClaimReport(Message):
    """another MAC claims the VIP (`event` `foreign_claim`) or no longer does (`foreign_claim_over`): `claim` `{"mac", "host", "since", "kind"}` (`since` unix time) or None; an event on the VIP"""

    claim: dict[str, Any] | None
    event: str
    reason: str
    metrics: dict[str, Any] | None = None  # as in `metrics`


@message(Family.COMMAND, "wire_view")
class WireView(Message):
    """what the heartbeats say of the VIP, sent when it changes: live holders `[{"host", "priority", "lock"}]`, live eligible candidates, when a holder was last heard (monotonic), the heartbeat interval"""

    holders: tuple[HeardPeer, ...] = field(metadata={ITEMS: HeardPeer})
    candidates: tuple[HeardPeer, ...] = field(metadata={ITEMS: HeardPeer})
    holder_heard_at: float | None
    interval: float


@message(Family.COMMAND, "reannounce")
class Reannounce(Message):
    """another host stopped holding the VIP this host holds with the lock: announce it again now"""

    reason: str


Command = Union[Stop, Settings, LogLevel, Priority, ReadCandidates, HandOver, WireView, Reannounce]
@message(Family.REPORT, "wire")
class WireReport(Message):
    """what this host's heartbeat says of the VIP, and the wire's decision (`decision` None while etcd decides); on change"""

    bound: bool
    lock: bool
    eligible: bool
    priority: int
    decision: str | None = None
    rank: int | None = None
    since: float | None = None  # unix time of the decision
    reason: str = ""


Report = Union[StateReport, BinderReport, MetricsReport, BootFailed, CandidatesDone, FailoverDone, Heartbeat, ClaimReport, WireReport]


# -- the wire -------------------------------------------------------------------------------
def encode(value: Message, request_id: int | None = None) -> dict[str, Any]:
    """The dict that crosses the pipe; `request_id` numbers a request (the API process's)."""
    wire: dict[str, Any] = {type(value).family.key: type(value).kind}
    if request_id is not None:
        wire["id"] = request_id
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if SPREAD in f.metadata:
            wire.update(item)
        elif ITEMS in f.metadata:
            wire[f.name] = [dataclasses.asdict(i) for i in item]
        else:
            wire[f.metadata.get(WIRE, f.name)] = item
    return wire


def decode(wire: object, family: Family) -> Message:
    """The message a dict from the pipe stands for; ProtocolError if it is none of `family`."""
    if not isinstance(wire, dict):
        raise ProtocolError(f"{family.label}: a {type(wire).__name__}, not a message")
    kind = wire.get(family.key)
    cls = _REGISTRY[family].get(kind) if isinstance(kind, (str, bool)) else None
    if cls is None or type(kind) is not type(cls.kind):
        raise ProtocolError(f"{family.label}: unknown message ({family.key} {kind!r:.50})")
    rest = {k: v for k, v in wire.items() if k != family.key and not (family is Family.REQUEST and k == "id")}
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if SPREAD in f.metadata:
            values[f.name] = {k: rest.pop(k) for k in f.metadata[SPREAD] if k in rest}
            continue
        name = f.metadata.get(WIRE, f.name)
        if name not in rest:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{family.label} {kind!r}: field {name!r} is missing")
            continue
        value = rest.pop(name)
        if ITEMS in f.metadata:
            if not isinstance(value, list):
                raise ProtocolError(f"{family.label} {kind!r}: field {name!r} is {value!r:.50}")
            values[f.name] = tuple(_item(f.metadata[ITEMS], raw, f"{family.label} {kind!r}: field {name!r}") for raw in value)
            continue
        if not cls.checks[f.name](value):
            raise ProtocolError(f"{family.label} {kind!r}: field {name!r} is {value!r:.50}")
        values[f.name] = value
    if rest:
        raise ProtocolError(f"{family.label} {kind!r}: unknown field(s) {', '.join(map(repr, sorted(rest)))}")
    return cls(**values)


def decode_request(wire: object) -> tuple[int, Message]:
    """A request and its id; ProtocolError (with the id when there is one) if it is none."""
    raw_id = wire.get("id") if isinstance(wire, dict) else None
    request_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    if request_id is None:
        raise ProtocolError(f"{Family.REQUEST.label}: a request without an id")
    try:
        return request_id, decode(wire, Family.REQUEST)
    except ProtocolError as exc:
        raise ProtocolError(str(exc), request_id) from None


def answer_id(wire: object) -> int | None:
    """The request id an answer from the pipe carries (None: it has none, drop it)."""
    raw = wire.get("id") if isinstance(wire, dict) else None
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


# -- dispatch -------------------------------------------------------------------------------
class Dispatcher:
    """One handler per message class, the one dispatch style of every process: a table
    message type -> handler(message, *context), checked complete against the family when
    built, so a message added here without its handler fails at once, not in production."""

    def __init__(self, family: Family, handlers: Mapping[type[Message], Callable[..., Any]]) -> None:
        missing = [cls.__name__ for cls in _REGISTRY[family].values() if cls not in handlers]
        if missing:
            raise TypeError(f"no handler for {', '.join(missing)} ({family.label})")
        self.family = family
        self._handlers = dict(handlers)

    def __call__(self, value: Message, *context: Any) -> Any:
        return self._handlers[type(value)](value, *context)


def messages(family: Family) -> list[type[Message]]:
    return list(_REGISTRY[family].values())


def markdown_table() -> str:
    """The message table of docs/ARCHITECTURE.md (regenerate: python -m link.vocabulary.protocol)."""
    rows = ["| direction | message | fields | meaning / answer |", "|---|---|---|---|"]
    for family in Family:
        for cls in messages(family):
            kind = ('`"ok": true`' if cls.kind else '`"ok": false`') if family is Family.ANSWER else f"`{cls.kind}`"
            names = []
            for f in dataclasses.fields(cls):
                if SPREAD in f.metadata:
                    names.append("any of " + ", ".join(f"`{n}`" for n in f.metadata[SPREAD]))
                else:
                    optional = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                    names.append(f"`{f.metadata.get(WIRE, f.name)}`" + ("?" if optional else ""))
            doc = " ".join((cls.__doc__ or "").split()).replace("|", "\\|")
            rows.append(f"| {family.label} | {kind} | {', '.join(names) or '–'} | {doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
