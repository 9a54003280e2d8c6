"""systemd's service notification protocol (sd_notify(3)), written here rather than imported.

Debian has python3-systemd (systemd.daemon.notify), but it is a C extension: the PyPI build
(systemd-python) needs libsystemd-dev and a compiler, which the virtualenv and pip users do
not have, and its notify() sends on a blocking socket, while the supervisor must never wait
(a full socket queue would stop the very loop the watchdog watches). The protocol is one
datagram of "KEY=value" lines to the AF_UNIX socket named by $NOTIFY_SOCKET, so it is written
here: a socket opened per message (no fd for forked children to inherit, no thread), sent
with MSG_DONTWAIT, dropped (and said once) when it cannot go.

Without $NOTIFY_SOCKET (the agent not run by systemd) nothing is sent.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import MutableMapping

logger = logging.getLogger(__name__)

# What systemd sets for the main process; taken out of the environment at once (as
# sd_notify's unset_environment), so that no worker, API process or health check forked
# later can speak for the service.
ENV_NAMES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str) -> str | None:
    """$NOTIFY_SOCKET as an address for sendto: an absolute path, or '@name' for Linux's
    abstract namespace (a leading NUL byte). None when unusable."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_seconds(environ: MutableMapping[str, str], pid: int) -> float | None:
    """The watchdog period asked for, as sd_watchdog_enabled(3) reads it: WATCHDOG_USEC a
    positive integer, and WATCHDOG_PID, when set, this process's pid. None when not asked."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 1_000_000


class Notifier:
    """Sends notifications to systemd, if it asked for them."""

    def __init__(self, address: str | None, watchdog: float | None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None  # seconds
        self._failing = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> "Notifier":
        """Read (and remove) systemd's variables from the environment (os.environ by default)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        address = socket_address(raw) if raw else None
        if raw and address is None:
            logger.warning("NOTIFY_SOCKET=%r is neither an absolute path nor @abstract: not notifying systemd", raw)
        watchdog = watchdog_seconds(env, os.getpid() if pid is None else pid)
        for name in ENV_NAMES:
            env.pop(name, None)
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of "KEY=value" lines; True when the socket took it."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, self.address)
        except OSError as exc:
            if not self._failing:
                logger.warning("could not notify systemd (%s): %s", exc.strerror or exc, lines[0].split("=")[0])
            self._failing = True
            return False
        if self._failing:
            logger.info("notifying systemd again")
        self._failing = False
        return True
