"""Looking at a namespace's interface every few milliseconds without loading the machine:
one raw netlink socket made inside the namespace, the requests and answers packed and read
with struct.

The observers of the chaos test and the benchmarks sample every host every few ms. pyroute2
parses each message in Python: a dump of a host's addresses costs about 1 ms with a handful of
VIPs and 9-17 ms with 300, so an observer built on it took most of a core of this two-core
machine and slowed down the very agents it watched. This costs tens of microseconds.
"""
from __future__ import annotations

import ipaddress
import socket
import struct

from . import netns

RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR, RTM_NEWNEIGH, RTM_GETNEIGH = 16, 18, 20, 22, 28, 30
NLMSG_DONE, NLMSG_ERROR = 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1

_HDR = struct.Struct("=IHHII")
_IFADDR = struct.Struct("=BBBBI")
_IFINFO = struct.Struct("=BxHiII")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTA = struct.Struct("=HH")


def _attrs(msg: bytes, offset: int) -> dict[int, bytes]:
    attrs: dict[int, bytes] = {}
    while offset + _RTA.size <= len(msg):
        length, kind = _RTA.unpack_from(msg, offset)
        if length < _RTA.size:
            break
        attrs[kind] = msg[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    return attrs


class AddressDump:
    """Addresses and link state of one interface of one namespace."""

    def __init__(self, ns: str, ifname: str) -> None:
        with netns.entered(ns):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
            try:
                self.index = socket.if_nametoindex(ifname)
            except OSError:
                self._sock.close()
                raise
        self._sock.settimeout(2.0)
        self._sock.bind((0, 0))
        self._seq = 0

    def _exchange(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes, int]]:
        """Send one request; (type, data, offset of the payload) of every answer message."""
        self._seq += 1
        seq = self._seq
        self._sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        out: list[tuple[int, bytes, int]] = []
        for _ in range(10000):  # bounded: a dump ends with NLMSG_DONE, a single answer at once
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _, mseq, _ = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", data, offset + _HDR.size)[0]
                        if code:
                            raise OSError(code, f"netlink request {kind}: error {code}")
                        return out
                    out.append((mtype, data[offset:offset + length], _HDR.size))
                    if not flags & NLM_F_DUMP:
                        return out
                offset += (length + 3) & ~3
        raise OSError("netlink: no end to the answer")

    def addresses(self) -> set[str]:
        """The interface's addresses, IPv4 and IPv6, compressed, without prefix lengths."""
        return {str(ipaddress.ip_address(raw)) for raw in self.packed()}

    def packed(self) -> set[bytes]:
        """The interface's addresses as packed bytes (compare with ip_address(...).packed)."""
        found: set[bytes] = set()
        for mtype, msg, at in self._exchange(RTM_GETADDR, NLM_F_DUMP, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if mtype != RTM_NEWADDR:
                continue
            if _IFADDR.unpack_from(msg, at)[4] != self.index:
                continue
            attrs = _attrs(msg, at + _IFADDR.size)
            raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
            if raw is not None:
                found.add(raw)
        return found

    def link_up(self) -> bool:
        """Whether the interface is administratively up (a host whose link is down answers nobody)."""
        for mtype, msg, at in self._exchange(RTM_GETLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, self.index, 0, 0)):
            if mtype == RTM_NEWLINK:
                return bool(_IFINFO.unpack_from(msg, at)[3] & IFF_UP)
        raise OSError(f"no link answer for interface index {self.index}")

    def neighbours(self) -> dict[str, str]:
        """The interface's neighbour table, IPv4 and IPv6: {address: MAC} for the entries that
        have a link-layer address."""
        found: dict[str, str] = {}
        for mtype, msg, at in self._exchange(RTM_GETNEIGH, NLM_F_DUMP, _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if mtype != RTM_NEWNEIGH or _NDMSG.unpack_from(msg, at)[1] != self.index:
                continue
            attrs = _attrs(msg, at + _NDMSG.size)
            if NDA_DST in attrs and len(attrs.get(NDA_LLADDR, b"")) == 6:
                found[str(ipaddress.ip_address(attrs[NDA_DST]))] = ":".join(f"{b:02x}" for b in attrs[NDA_LLADDR])
        return found

    def close(self) -> None:
        self._sock.close()
