"""WIRE_* settings: parsed and checked at start-up (link.config calls these), one ConfigError each."""
from __future__ import annotations

import errno
import ipaddress
import os
import stat

from link.security_settings import ConfigError
from link.wire.codec import MAX_HOST
from link.wire.peers import MAX_PEERS, Endpoint, parse_endpoint

DEFAULT_PORT = 1314  # next to the API's 1313
MAX_HOSTNAME = MAX_HOST  # bytes: the heartbeat carries the name (DNS names are at most 253)
MIN_KEY = 16  # bytes: a shorter shared key is guessable


def parse_peers(raw: str, port: int) -> tuple[Endpoint, ...]:
    """WIRE_PEERS: comma-separated address[:port] (exoip's -p, keepalived's unicast_peer)."""
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            found.append(parse_endpoint(item, port))
        except ValueError:
            raise ConfigError(f"WIRE_PEERS entry {item[:80]!r} is not an address[:port] such as 198.51.100.2 "
                              "or [2001:db8::2]:1314") from None
    if len(found) > MAX_PEERS:
        raise ConfigError(f"WIRE_PEERS lists {len(found)} peers (at most {MAX_PEERS})")
    return tuple(dict.fromkeys(found))


def parse_address(raw: str) -> str:
    """WIRE_ADDRESS: the address peers send this host's heartbeats to (published in etcd), and the
    one the heartbeat socket is bound to, so its heartbeats come from it too ("": the socket
    listens on every address of INTERFACE and INTERFACE's first IPv4 address is published)."""
    text = raw.strip()
    if not text:
        return ""
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        raise ConfigError(f"WIRE_ADDRESS={text[:80]!r} is not an IPv4 or IPv6 address") from None


def _check_owner(path: str, info: os.stat_result) -> None:
    """Owner root or this agent's user; group-readable only for root's group or this agent's (the
    package's service runs as link:link, its key is root:link 0640); never others."""
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"WIRE_KEY_FILE={path!r} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"WIRE_KEY_FILE={path!r} belongs to uid {info.st_uid}: it must be root's or this agent's user's")
    if mode & 0o007 or mode & 0o020:
        raise ConfigError(f"WIRE_KEY_FILE={path!r} is readable or writable by others, or writable by its group "
                          f"(mode {mode:o}): chmod 0600 it (or chgrp link and chmod 0640)")
    if mode & 0o040 and info.st_gid not in (0, os.getegid()):
        raise ConfigError(f"WIRE_KEY_FILE={path!r} is readable by group {info.st_gid}, neither root's nor this agent's: "
                          "chmod 0600 it (or chgrp link and chmod 0640)")


def read_key(path: str) -> bytes | None:
    """WIRE_KEY_FILE: the shared HMAC key (the file's bytes, surrounding blanks stripped). Opened
    without following a symbolic link and checked on the open file (no swap between check and
    read): see _check_owner. The key is never in a message."""
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        text = "is a symbolic link (give the file itself)" if exc.errno == errno.ELOOP else f"cannot be read: {exc.strerror or exc}"
        raise ConfigError(f"WIRE_KEY_FILE={path!r} {text}") from None
    try:
        _check_owner(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            key = handle.read(4097).strip()
    except OSError as exc:
        raise ConfigError(f"WIRE_KEY_FILE={path!r} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if not MIN_KEY <= len(key) <= 4096:
        raise ConfigError(f"WIRE_KEY_FILE={path!r} holds {len(key)} bytes: a key of {MIN_KEY} to 4096 bytes is needed "
                          "(e.g. head -c 32 /dev/urandom | base64)")
    return key
