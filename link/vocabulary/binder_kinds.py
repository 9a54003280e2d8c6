"""The binder kinds and their settings, defined once (issue 16).

A VIP's `binder` says how it is put in place on the host that wins it; a kind with settings
takes them in a JSON object named after it (`{"binder": "command", "command": {...}}`). Each
kind is one `BinderKind` in `KINDS`: its settings' names, types, bounds, defaults, which are
required and which are secrets. Everything else reads them from here: the API's validation
(`BinderKind.read`, its messages naming the field), the API's view of a VIP (`public`: secrets
masked), the pipe protocol's list of add settings, VipSpec's (de)serialisation, the programs
and URLs the security checks look at, and the binder implementations' defaults (`values`).
Adding a binder is its entry here, its implementation (one module link/worker/binders/<kind>.py,
found by its name: no registry), its tests and its documentation (README, link/api/openapi.json,
written by hand: tests/unit/test_binder_kinds.py checks them against this schema).

A leaf module: the standard library and the other vocabulary modules only.
"""
from __future__ import annotations

import math
import os.path
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping
from urllib.parse import urlsplit

from link.vocabulary.json_values import json_type_name

SECRET_MASK = "***"  # what the API shows in place of a secret


class SettingError(ValueError):
    """A binder setting a client got wrong; the text names the field and never echoes a secret."""


@dataclass(frozen=True)
class Setting:
    """One field of a binder's settings object. `needed` completes the message when a required
    field is missing: `<kind>.<name> is required: <needed>`."""

    name: str
    required: bool = False
    needed: str = ""
    default: Any = None  # what an absent (or null) optional field is
    secret: ClassVar[bool] = False
    placeholder: ClassVar[str] = "..."  # the value in a message's example of the settings object

    def read(self, value: object, where: str) -> Any:
        """The value checked (never None here), in the form the binder uses; SettingError otherwise."""
        raise NotImplementedError

    def missing(self, where: str) -> SettingError:
        return SettingError(f"{where} is required: {self.needed}")


@dataclass(frozen=True)
class Program(Setting):
    """A program and its arguments, run without a shell: whether it may run is the host's
    business (link.scripts.check_program, on add and before every run); here, its shape."""

    MAX_ARGS: ClassVar[int] = 64
    MAX_ARG_LENGTH: ClassVar[int] = 4096
    placeholder: ClassVar[str] = "[...]"

    def read(self, value: object, where: str) -> list[str]:
        example = '["/etc/link/scripts/fip", "attach"]'
        if not isinstance(value, list) or not value:
            raise SettingError(f"{where} must be a non-empty list of strings (a program and its arguments, no shell), e.g. {example}")
        if len(value) > self.MAX_ARGS:
            raise SettingError(f"{where} has {len(value)} items; at most {self.MAX_ARGS}")
        for i, part in enumerate(value):
            if not isinstance(part, str) or not part:
                raise SettingError(f"{where}[{i}] must be a non-empty string")
            if len(part) > self.MAX_ARG_LENGTH or "\0" in part:
                raise SettingError(f"{where}[{i}] must be at most {self.MAX_ARG_LENGTH} characters, without NUL")
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:
                raise SettingError(f"{where}[{i}] must be valid UTF-8 text (no lone surrogate): exec takes bytes") from None
        if not os.path.isabs(value[0]):
            raise SettingError(f"{where}[0] must be an absolute path in SCRIPTS_DIR (there is no shell to search PATH)")
        return list(value)


@dataclass(frozen=True)
class Seconds(Setting):
    """A duration, bounded so one VIP cannot stall its own binder for long."""

    low: float = 0.0
    high: float = math.inf

    def read(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingError(f"{where} must be a number of seconds, not a JSON {json_type_name(value)}")
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise SettingError(f"{where} must be between {self.low:g} and {self.high:g} seconds (default {self.default:g})")
        return float(value)


@dataclass(frozen=True)
class HttpUrl(Setting):
    """An http:// or https:// URL the agent calls: shown by the API, so no credentials in it
    (whether its origin may be called is WEBHOOK_ALLOWED_URLS', checked by link.api.admission)."""

    max_length: int = 2048
    placeholder: ClassVar[str] = '"https://..."'

    def read(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.missing(where)
        if len(value) > self.max_length or not value.isprintable() or any(c.isspace() for c in value):
            raise SettingError(f"{where} must be at most {self.max_length} printable characters, without spaces")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise SettingError(f"{where} is not a valid URL (check its host and port)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingError(f"{where} must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise SettingError(f"{where} must not contain a user or password (the API shows the URL; the secret signs requests)")
        if parts.fragment:
            raise SettingError(f"{where} must not have a #fragment")
        return value


@dataclass(frozen=True)
class Secret(Setting):
    """A shared secret: never in a message, a log line or an API answer (`SECRET_MASK`)."""

    min_length: int = 16
    max_length: int = 1024
    secret: ClassVar[bool] = True
    placeholder: ClassVar[str] = '"..."'

    def read(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.missing(where)
        if not self.min_length <= len(value) <= self.max_length or not value.isprintable():
            raise SettingError(f"{where} must be {self.min_length} to {self.max_length} printable characters "
                               "(e.g. the output of `openssl rand -hex 32`)")
        return value


@dataclass(frozen=True)
class BinderKind:
    """A binder kind and its settings (none: the kind takes no settings object)."""

    name: str
    settings: tuple[Setting, ...] = ()

    def names(self) -> tuple[str, ...]:
        return tuple(setting.name for setting in self.settings)

    def example(self) -> str:
        """Its settings object as messages show it: the required fields."""
        return "{" + ", ".join(f'"{s.name}": {s.placeholder}' for s in self.settings if s.required) + "}"

    def read(self, value: object) -> dict[str, Any]:
        """The settings object a client sent, checked, every field present (defaults filled in),
        in the order above; SettingError naming the first field at fault. Missing required
        fields are named before any other fault."""
        names = self.names()
        if not isinstance(value, dict):
            raise SettingError(f"{self.name} must be an object with {', '.join(names)}, not a JSON {json_type_name(value)}")
        for key in value:
            if key not in names:
                raise SettingError(f"unknown field {self.name}.{key[:60]!r} ({self.name} takes {', '.join(names)})")
        for setting in self.settings:
            if setting.required and value.get(setting.name) is None:
                raise setting.missing(f"{self.name}.{setting.name}")
        return {s.name: s.default if value.get(s.name) is None else s.read(value[s.name], f"{self.name}.{s.name}")
                for s in self.settings}

    def values(self, settings: Mapping[str, Any] | None) -> dict[str, Any]:
        """The settings as a binder uses them: an absent or null field is its default."""
        given = settings or {}
        return {s.name: s.default if given.get(s.name) is None else given[s.name] for s in self.settings}

    def public(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings as the API shows them: secrets masked."""
        return {**settings, **{s.name: SECRET_MASK for s in self.settings if s.secret}}

    def programs(self, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(field, program) of every program the settings name: `command.activate[0]`..."""
        return [(f"{self.name}.{s.name}[0]", settings[s.name][0]) for s in self.settings
                if isinstance(s, Program) and isinstance(settings.get(s.name), list) and settings[s.name]]

    def urls(self, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(field, URL) of every URL the settings make the agent call: `webhook.url`..."""
        return [(f"{self.name}.{s.name}", str(settings[s.name])) for s in self.settings
                if isinstance(s, HttpUrl) and settings.get(s.name)]


ARP = BinderKind("arp")  # netlink + gratuitous ARP/NA on INTERFACE: no settings

COMMAND = BinderKind("command", (
    Program("activate", required=True, needed="the program to run on activate"),
    Program("deactivate", required=True, needed="the program to run on deactivate"),
    Program("ensure"),
    Seconds("timeout", default=10.0, low=0.1, high=600.0),
    Seconds("ensure_interval", default=30.0, low=1.0, high=86400.0),
))

WEBHOOK = BinderKind("webhook", (
    HttpUrl("url", required=True, needed="the http:// or https:// URL to POST to", max_length=2048),
    Secret("secret", required=True, needed="a string the receiver shares, to check the signature",
           min_length=16, max_length=1024),
    Seconds("timeout", default=5.0, low=0.1, high=60.0),
))

# Every kind, in the order messages and documents list them; the first is the default.
KINDS: dict[str, BinderKind] = {kind.name: kind for kind in (ARP, COMMAND, WEBHOOK)}
DEFAULT = ARP.name


def names() -> tuple[str, ...]:
    return tuple(KINDS)


def settings_fields() -> tuple[str, ...]:
    """The top-level fields that carry a kind's settings: one per kind that has settings."""
    return tuple(kind.name for kind in KINDS.values() if kind.settings)


def _settings_in(vip: Mapping[str, Any]) -> tuple[BinderKind, Mapping[str, Any]] | None:
    binder = vip.get("binder")
    kind = KINDS.get(binder) if isinstance(binder, str) else None
    if kind is None or not kind.settings:
        return None
    settings = vip.get(kind.name)
    return (kind, settings) if isinstance(settings, Mapping) else None


def programs_of(vip: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, program) of every program the binder of a VIP in its JSON form (a parsed add
    request, `VipSpec.to_json()`) runs: what link.scripts checks against SCRIPTS_DIR."""
    found = _settings_in(vip)
    return found[0].programs(found[1]) if found else []


def urls_of(vip: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, URL) of every URL the binder of a VIP in its JSON form calls: what
    WEBHOOK_ALLOWED_URLS must list."""
    found = _settings_in(vip)
    return found[0].urls(found[1]) if found else []
