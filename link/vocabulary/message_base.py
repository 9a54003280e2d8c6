"""The ground of the pipe protocol (link.vocabulary.protocol): the families, the Message base,
the @message decorator that registers a message class, and the checks `decode` applies to a
field. The messages themselves are in messages_requests, messages_answers, messages_commands
and messages_reports (one module per family); link.vocabulary.protocol imports them all.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar, Union

from link.vocabulary.vip import SettingNames


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
