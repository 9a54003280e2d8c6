"""Parsing of the settings that decide who reaches the agent and what it does for them:
BIND_ADDRESS (where the API listens), SCRIPT_USER (who programs run as) and
WEBHOOK_ALLOWED_URLS (whom a webhook binder may call).

A leaf: it imports nothing from link, so link.config, link.scripts and the API can all use it.
`ConfigError` lives here for that reason; link.config raises and exports the same class.
"""
from __future__ import annotations

import grp
import ipaddress
import os
import pwd
from dataclasses import dataclass
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one line that names the variable."""


LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def parse_bind_addresses(raw: str, password: str) -> tuple[str, ...]:
    """BIND_ADDRESS: comma-separated IP addresses; default loopback, or 0.0.0.0 (LinK's) with a PASSWORD."""
    items = [part.strip().strip("[]") for part in raw.split(",") if part.strip()]
    if not items:
        return ("0.0.0.0",) if password else LOOPBACK_ADDRESSES
    addresses = []
    for item in items:
        try:
            addresses.append(ipaddress.ip_address(item).compressed)
        except ValueError:
            raise ConfigError(f"BIND_ADDRESS entry {item[:60]!r} is not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0)") from None
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"BIND_ADDRESS={raw!r} names an address twice")
    return tuple(addresses)


@dataclass(frozen=True)
class ScriptUser:
    """Who EXEC checks and command binders run as; `name` "" means this process's own identity."""

    name: str
    uid: int
    gid: int

    @property
    def switches(self) -> bool:
        """True when a program must be started under another uid or gid than the agent's."""
        return (self.uid, self.gid) != (os.geteuid(), os.getegid())

    def __str__(self) -> str:
        return f"{self.name or pwd_name(self.uid)} (uid {self.uid}, gid {self.gid})"


def pwd_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def parse_script_user(raw: str, euid: int | None = None) -> ScriptUser:
    """SCRIPT_USER "user" or "user:group" (keepalived's script_user). Unset: as root, nobody
    (never root); otherwise the agent's own user, as a non-root process cannot switch."""
    euid = os.geteuid() if euid is None else euid
    text = raw.strip()
    if not text:
        if euid != 0:
            return ScriptUser("", os.geteuid(), os.getegid())
        text = "nobody"
    user_name, _, group_name = text.partition(":")
    try:
        entry = pwd.getpwnam(user_name)
    except KeyError:
        raise ConfigError(f"SCRIPT_USER={text!r}: no user {user_name!r} on this host") from None
    gid = entry.pw_gid
    if group_name:
        try:
            gid = grp.getgrnam(group_name).gr_gid
        except KeyError:
            raise ConfigError(f"SCRIPT_USER={text!r}: no group {group_name!r} on this host") from None
    elif user_name == "nobody" and not raw.strip():
        # Debian's nobody has the group nogroup; keep it if it exists.
        try:
            gid = grp.getgrnam("nogroup").gr_gid
        except KeyError:
            pass
    user = ScriptUser(user_name, entry.pw_uid, gid)
    if euid != 0 and (user.uid, user.gid) != (os.geteuid(), os.getegid()):
        raise ConfigError(f"SCRIPT_USER={text!r}: the agent runs as {pwd_name(euid)}, not root, "
                          "so its programs can only run as that user: unset SCRIPT_USER")
    return user


def parse_webhook_allowed_urls(raw: str) -> tuple[str, ...]:
    """WEBHOOK_ALLOWED_URLS: comma-separated origins, scheme://host[:port], as `origin()` spells them."""
    origins = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(f"WEBHOOK_ALLOWED_URLS entry {item[:80]!r} has a bad host or port") from None
        if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/")
                or parts.query or parts.fragment or parts.username is not None):
            raise ConfigError(f"WEBHOOK_ALLOWED_URLS entry {item[:80]!r} is not an origin such as https://hooks.example.net:8443")
        origins.append(origin(item))
    return tuple(dict.fromkeys(origins))


def origin(url: str) -> str:
    """scheme://host:port of a URL, lower case, with the scheme's default port written out and
    an IP literal in its canonical form ([2001:DB8:0::7] and [2001:db8::7] are one origin)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass  # a name, not an IP literal
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{shown}:{port}"
