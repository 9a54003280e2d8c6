"""What the kernel says of an interface's link: admin up, carrier (IFF_LOWER_UP), there at all.

One rtnetlink socket subscribed to the link notifications (RTM_NEWLINK / RTM_DELLINK), read
from the worker's selector loop: a carrier loss wakes it at once, nothing is polled. The state
at start is asked for with one RTM_GETLINK per tracked name on the same socket, so an answer
and a later notification are read, and mean, the same (no window between the two).

Interfaces are followed by name, not index: an interface deleted and created again (a bond,
a VLAN brought up again by ifupdown) is followed again. Link messages are rare (a few per
interface change), so no kernel filter: every worker parses them, each a few microseconds.
Built with struct on a socket of its own, as link.adapters.rtnl, so a unit test can hand it
raw messages (the `sock` seam).
"""
from __future__ import annotations

import errno
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Protocol, Sequence

from link.adapters.rtnl import _NLMSGHDR, NETLINK_ROUTE, NLM_F_REQUEST, NLMSG_ERROR, _attr, _attrs

logger = logging.getLogger(__name__)

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTMGRP_LINK = 0x1
IFLA_IFNAME = 3
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000  # the driver (or a veth's peer) has carrier
IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
MAX_DRAIN = 1000  # messages read per look; the rest wait for the next turn of the loop


@dataclass(frozen=True)
class LinkNews:
    """One interface as a message described it."""

    name: str
    index: int  # 0 when unknown (an interface that does not exist)
    present: bool  # False: deleted, or no such interface
    admin_up: bool = False
    lower_up: bool = False

    @property
    def carrier(self) -> bool:
        """What "carrier" means here: the kernel says the link is up (IFF_LOWER_UP) and the
        admin has not set it down (IFF_UP)."""
        return self.present and self.admin_up and self.lower_up

    def why_not(self) -> str:
        """Why there is no carrier, in a few words ("" when there is)."""
        if not self.present:
            return "no such interface"
        if not self.admin_up:
            return "set down"
        if not self.lower_up:
            return "no carrier"
        return ""


class LinkSocket(Protocol):
    """The part of a netlink socket the watch uses (a fake in unit tests)."""

    def fileno(self) -> int: ...

    def send(self, data: bytes) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def close(self) -> None: ...


def open_link_socket() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to the link notifications."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.bind((0, RTMGRP_LINK))
    except OSError:
        sock.close()
        raise
    return sock


def getlink_request(name: str, seq: int) -> bytes:
    """RTM_GETLINK for one interface by name: answered with its RTM_NEWLINK, or an error."""
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(IFLA_IFNAME, name.encode() + b"\0")
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST, seq, 0) + body


def parse(data: bytes, asked: dict[int, str]) -> list[LinkNews]:
    """The link news in one datagram; `asked` maps our requests' sequence numbers to the names
    asked for (an error answer names no interface). Answers found are removed from `asked`."""
    found: list[LinkNews] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, seq, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break  # malformed: the rest of the datagram cannot be walked
        body = offset + _NLMSGHDR.size
        if kind in (RTM_NEWLINK, RTM_DELLINK) and body + IFINFOMSG.size <= offset + length:
            _, _, index, flags, _ = IFINFOMSG.unpack_from(data, body)
            attrs = _attrs(data, body + IFINFOMSG.size, offset + length)
            name = attrs.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace")
            if name and asked.get(seq) == name:  # our answer (a notification may carry another's number)
                del asked[seq]
            if name:
                found.append(LinkNews(name, index, kind == RTM_NEWLINK, bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP)))
        elif kind == NLMSG_ERROR and seq in asked and body + 4 <= len(data):
            code = -int(struct.unpack_from("=i", data, body)[0])
            name = asked.pop(seq)
            if code == errno.ENODEV:
                found.append(LinkNews(name, 0, False))
            elif code:
                logger.warning("asking the kernel about %s: %s", name, errno.errorcode.get(code, code))
        offset += max((length + 3) & ~3, _NLMSGHDR.size)
    return found


class LinkWatch:
    """The link news of the interfaces named, from the kernel's notifications and answers."""

    def __init__(self, names: Sequence[str], sock: LinkSocket | None = None) -> None:
        self.names = tuple(names)
        self._sock: LinkSocket = sock if sock is not None else open_link_socket()
        self._asked: dict[int, str] = {}
        self._seq = 0
        self.overflows = 0

    def fileno(self) -> int:
        return self._sock.fileno()

    def ask(self) -> None:
        """Ask the kernel for the state of every name now; read() returns the answers."""
        for name in self.names:
            self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
            self._asked[self._seq] = name
            self._sock.send(getlink_request(name, self._seq))

    @property
    def waiting(self) -> bool:
        """Whether answers to ask() are still to come."""
        return bool(self._asked)

    def read(self) -> list[LinkNews]:
        """The news pending, in the kernel's order (drained without waiting). Notifications
        lost to a full socket buffer (ENOBUFS) make it ask for every name again."""
        news: list[LinkNews] = []
        lost = False
        for _ in range(MAX_DRAIN):
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            news += parse(data, self._asked)
        if lost:
            self.overflows += 1
            logger.warning("link notifications were lost (socket buffer full): asking the kernel again about %s",
                           ", ".join(self.names))
            self._asked.clear()
            self.ask()
        return news

    def close(self) -> None:
        self._sock.close()
