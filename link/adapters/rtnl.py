"""The two rtnetlink requests a holder makes on every cycle, built with struct on sockets of
its own: refresh its VIP's address lifetime, and learn at once when someone deletes the VIP.

Why not pyroute2 here: it builds and parses each message in Python (0.1-0.2 ms a request, and
9-17 ms to dump 300 addresses to find one), and Debian 12's pyroute2 0.7.2 drops an
address's lifetime without a word. pyroute2 still does everything else (link lookup, MAC,
unbinding, the rare full check).

Why a lifetime: a VIP bound with `valid_lft` = the lease is removed by the kernel itself
when nobody refreshes it. A worker that is SIGKILLed together with its supervisor (an OOM
kill of the whole agent, `systemctl kill -s KILL`), or frozen, cannot unbind; its peers take
the VIP once its lease expires, and by then the kernel has removed the address here, so
two hosts never answer ARP for it (measured: IPv4 lifetimes end within ~50 ms of the second).
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR = 20, 21
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO = 1, 2, 6
IFA_F_NODAD = 0x02  # IPv6: usable at once, no duplicate address detection
RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x10, 0x100
FOREVER = 0xFFFFFFFF  # the kernel's "infinite" lifetime
SO_ATTACH_FILTER = 26

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")  # length, type


class NetlinkFailed(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found[kind] = data[offset + _RTATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


class _Vip:
    def __init__(self, index: int, vip: str) -> None:
        iface = ipaddress.ip_interface(vip)
        self.index = index
        self.family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        self.packed = iface.ip.packed
        self.prefixlen = iface.network.prefixlen


class AddressLifetime(_Vip):
    """Adds the VIP with a lifetime, or refreshes that lifetime, on one request socket."""

    def __init__(self, index: int, vip: str) -> None:
        super().__init__(index, vip)
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self._sock.settimeout(1.0)  # the kernel answers in microseconds; never wait forever
        self._sock.bind((0, 0))
        self._seq = 0

    def _message(self, flags: int, lifetime: int | None) -> bytes:
        life = FOREVER if lifetime is None else max(1, int(lifetime))
        ifa_flags = IFA_F_NODAD if self.family == socket.AF_INET6 else 0
        body = _IFADDRMSG.pack(self.family, self.prefixlen, ifa_flags, 0, self.index)
        if self.family == socket.AF_INET:
            body += _attr(IFA_LOCAL, self.packed)
        body += _attr(IFA_ADDRESS, self.packed)
        # preferred = valid: an address past its preferred lifetime is "deprecated" and no
        # longer chosen as a source address.
        body += _attr(IFA_CACHEINFO, struct.pack("=IIII", life, life, 0, 0))
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | flags, self._seq, 0)
        return header + body

    def _request(self, message: bytes) -> int:
        """Send; the errno of the kernel's answer (0: done)."""
        seq = _NLMSGHDR.unpack_from(message)[3]
        self._sock.send(message)
        for _ in range(16):  # bounded: the answer to an older request that timed out is skipped
            data = self._sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _, got_seq, _ = _NLMSGHDR.unpack_from(data, offset)
                if kind == NLMSG_ERROR and got_seq == seq:
                    return -int(struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0])
                offset += max((length + 3) & ~3, _NLMSGHDR.size)
        raise NetlinkFailed(errno.EPROTO, "no answer from the kernel to our address request")

    def add(self, lifetime: int | None) -> bool:
        """Add the VIP; False if it was there already (its lifetime is then refreshed)."""
        code = self._request(self._message(NLM_F_CREATE | NLM_F_EXCL, lifetime))
        if code == errno.EEXIST:
            self.refresh(lifetime)
            return False
        if code:
            raise NetlinkFailed(code, f"adding the address: {errno.errorcode.get(code, code)}")
        return True

    def refresh(self, lifetime: int | None) -> None:
        """Give the VIP a new lifetime (adding it again if it went away)."""
        code = self._request(self._message(NLM_F_CREATE | NLM_F_REPLACE, lifetime))
        if code:
            raise NetlinkFailed(code, f"refreshing the address: {errno.errorcode.get(code, code)}")

    def close(self) -> None:
        self._sock.close()


class _SockFilter(ctypes.Structure):
    """struct sock_filter: one instruction of a classic BPF program."""
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


def _deladdr_filter(index: int) -> tuple[bytes, ctypes.Array[_SockFilter]]:
    """A classic BPF program for the kernel: keep only RTM_DELADDR messages of our interface,
    so that the many address changes of a busy host cost this socket nothing. BPF loads read
    big-endian; the netlink header is in host order, hence the from_bytes(pack("=")) below."""
    want_type = int.from_bytes(struct.pack("=H", RTM_DELADDR), "big")
    want_index = int.from_bytes(struct.pack("=I", index), "big")
    index_at = _NLMSGHDR.size + 4  # ifa_index in the ifaddrmsg
    code = [  # (opcode, jump if true, jump if false, constant)
        (0x28, 0, 0, 4),            # ldh [4]: nlmsg_type
        (0x15, 0, 3, want_type),    # jeq: go on, else drop
        (0x20, 0, 0, index_at),     # ld [20]: ifa_index
        (0x15, 0, 1, want_index),   # jeq: keep, else drop
        (0x06, 0, 0, 0xFFFF),       # ret: keep (up to 64 KiB)
        (0x06, 0, 0, 0),            # ret: drop
    ]
    program = (_SockFilter * len(code))(*[_SockFilter(*c) for c in code])
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}: the caller keeps
    # `program` alive until setsockopt has copied it into the kernel.
    return struct.pack("HL", len(code), ctypes.addressof(program)), program


class DeletionWatch(_Vip):
    """Tells whether the VIP was deleted from the interface since the last look.

    A netlink socket subscribed to the address notifications of the VIP's family, filtered in
    the kernel down to deletions on our interface; looking is one non-blocking recv."""

    REMOVED, OVERFLOW, NOTHING = "removed", "overflow", "nothing"

    def __init__(self, index: int, vip: str) -> None:
        super().__init__(index, vip)
        group = RTMGRP_IPV4_IFADDR if self.family == socket.AF_INET else RTMGRP_IPV6_IFADDR
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            fprog, program = _deladdr_filter(index)
            self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            del program
            self._sock.bind((0, group))
        except OSError:
            self._sock.close()
            raise

    def _ours(self, data: bytes, offset: int, length: int) -> bool:
        family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(data, offset + _NLMSGHDR.size)
        if family != self.family or prefixlen != self.prefixlen or index != self.index:
            return False
        attrs = _attrs(data, offset + _NLMSGHDR.size + _IFADDRMSG.size, offset + length)
        return attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS)) == self.packed

    def look(self) -> str:
        """REMOVED (our VIP was deleted), OVERFLOW (notifications were lost: cannot tell), or
        NOTHING. Drains what is pending."""
        verdict = self.NOTHING
        for _ in range(1000):  # bounded drain; the rest is seen next time
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                if verdict is self.NOTHING:
                    verdict = self.OVERFLOW
                continue
            offset = 0
            while offset + _NLMSGHDR.size + _IFADDRMSG.size <= len(data):
                length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
                if kind == RTM_DELADDR and self._ours(data, offset, length):
                    verdict = self.REMOVED
                offset += max((length + 3) & ~3, _NLMSGHDR.size)
        return verdict

    def close(self) -> None:
        self._sock.close()
