"""Every message on the supervisor's pipes, defined once (docs/ARCHITECTURE.md, "Pipe protocol").

Four families travel on multiprocessing pipes: the API process's requests and the supervisor's
answers to them, the supervisor's commands to a worker and the worker's reports. Each message
is a frozen dataclass registered here; what crosses the pipe stays a plain dict (cheap to
pickle, readable in a debugger) that only `encode` builds and only `decode` reads. `decode`
refuses a message it does not know, or one with a field missing, unknown or of the wrong
type, with one ProtocolError naming it, so that a handler never meets a half-formed message.

Adding a message is one class in its family's module (messages_requests, messages_answers,
messages_commands, messages_reports: `@message(family, kind)`) and one handler in the table of
the process that receives it (`Dispatcher`); this module imports them all and keeps encode,
decode, dispatch and the table. `python -m link.vocabulary.protocol` prints the
table docs/ARCHITECTURE.md shows; a unit test keeps the two equal.

A leaf module: the supervisor, the API process and the workers import it; it imports only the
standard library, so the supervisor never loads a worker's libraries (gRPC, scapy) through it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from link.vocabulary.message_base import (ADD_SETTINGS, ITEMS, SPREAD, UPDATE_SETTINGS, WIRE, Family, Message,
                                          ProtocolError, _item, _REGISTRY, message)
# Imported family by family: the registration order is the order of the table.
from link.vocabulary.messages_requests import (
    ListIps, GetIp, AddIp, UpdateIp, DeleteIp, FailoverIp, GetEvents, GetMetrics, ApiListening, WirePeers, Request)
from link.vocabulary.messages_answers import (
    Done, Refused, Answer)
from link.vocabulary.messages_commands import (
    Stop, Settings, LogLevel, Priority, ReadCandidates, HandOver, WireView, Reannounce, Command)
from link.vocabulary.messages_reports import (
    StateReport, BinderReport, MetricsReport, BootFailed, CandidatesDone, FailoverDone, Heartbeat, ClaimReport, NotifyReport,
    WireReport, Report)

__all__ = [
    'ADD_SETTINGS', 'ITEMS', 'SPREAD', 'UPDATE_SETTINGS', 'WIRE', 'Family', 'Message', 'ProtocolError', 'message',
    'ListIps', 'GetIp', 'AddIp', 'UpdateIp', 'DeleteIp', 'FailoverIp', 'GetEvents', 'GetMetrics', 'ApiListening',
    'WirePeers', 'Request', 'Done', 'Refused', 'Answer', 'Stop', 'Settings', 'LogLevel', 'Priority',
    'ReadCandidates', 'HandOver', 'WireView', 'Reannounce', 'Command', 'StateReport', 'BinderReport',
    'MetricsReport', 'BootFailed', 'CandidatesDone', 'FailoverDone', 'Heartbeat', 'ClaimReport', 'NotifyReport',
    'WireReport', 'Report',
]


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
