"""The raw rtnetlink pieces (link/adapters/rtnl.py) on messages built here: which deletions are the
VIP's own, and the kernel filter's program. The real kernel is in the lab tests
(tests/integration/test_failover.py: lifetimes and deletions on a real interface)."""
from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

import pytest

from link.adapters import rtnl


def deladdr(address: str, prefixlen: int, index: int, kind: int = rtnl.RTM_DELADDR) -> bytes:
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = rtnl._IFADDRMSG.pack(family, prefixlen, 0, 0, index)
    if ip.version == 4:
        body += rtnl._attr(rtnl.IFA_ADDRESS, ip.packed) + rtnl._attr(rtnl.IFA_LOCAL, ip.packed)
    else:
        body += rtnl._attr(rtnl.IFA_ADDRESS, ip.packed)
    body += rtnl._attr(3, b"eth1\0")  # IFA_LABEL, to be skipped
    return rtnl._NLMSGHDR.pack(rtnl._NLMSGHDR.size + len(body), kind, 0, 0, 0) + body


class Watch(rtnl.DeletionWatch):
    """DeletionWatch without its socket: only the parsing."""

    def __init__(self, index: int, vip: str) -> None:
        rtnl._Vip.__init__(self, index, vip)


@pytest.mark.parametrize("vip,mine,others", [
    ("198.51.100.50/32", ("198.51.100.50", 32, 7), [("198.51.100.51", 32, 7), ("198.51.100.50", 24, 7),
                                                   ("198.51.100.50", 32, 8)]),
    ("2001:db8::50/128", ("2001:db8::50", 128, 7), [("2001:db8::51", 128, 7), ("2001:db8::50", 64, 7)]),
])
def test_only_the_vips_own_deletion_counts(vip, mine, others):
    watch = Watch(7, vip)
    message = deladdr(*mine)
    assert watch._ours(message, 0, len(message))
    for other in others:
        message = deladdr(*other)
        assert not watch._ours(message, 0, len(message)), other


def test_attributes_are_read_past_padding_and_stop_at_the_end():
    data = rtnl._attr(1, b"abcde") + rtnl._attr(2, b"\x01\x02\x03\x04") + b"\xff\xff"  # trailing junk
    assert rtnl._attrs(data, 0, len(data)) == {1: b"abcde", 2: b"\x01\x02\x03\x04"}


def test_a_new_address_message_carries_the_vip_and_its_lifetime():
    requests = rtnl.AddressLifetime.__new__(rtnl.AddressLifetime)
    rtnl._Vip.__init__(requests, 7, "2001:db8::50/128")
    requests._seq = 0
    message = requests._message(rtnl.NLM_F_CREATE | rtnl.NLM_F_REPLACE, 2)
    length, kind, flags, seq, _ = rtnl._NLMSGHDR.unpack_from(message)
    assert (length, kind, seq) == (len(message), rtnl.RTM_NEWADDR, 1)
    assert flags & rtnl.NLM_F_ACK and flags & rtnl.NLM_F_REPLACE
    family, prefixlen, ifa_flags, _, index = rtnl._IFADDRMSG.unpack_from(message, rtnl._NLMSGHDR.size)
    assert (family, prefixlen, index) == (socket.AF_INET6, 128, 7)
    assert ifa_flags & rtnl.IFA_F_NODAD  # no duplicate address detection: usable at once
    attrs = rtnl._attrs(message, rtnl._NLMSGHDR.size + rtnl._IFADDRMSG.size, len(message))
    assert attrs[rtnl.IFA_ADDRESS] == ipaddress.ip_address("2001:db8::50").packed
    assert struct.unpack("=IIII", attrs[rtnl.IFA_CACHEINFO])[:2] == (2, 2)  # preferred = valid
    forever = requests._message(rtnl.NLM_F_CREATE, None)
    attrs = rtnl._attrs(forever, rtnl._NLMSGHDR.size + rtnl._IFADDRMSG.size, len(forever))
    assert struct.unpack("=IIII", attrs[rtnl.IFA_CACHEINFO])[:2] == (rtnl.FOREVER, rtnl.FOREVER)


def test_the_kernel_filter_keeps_deletions_of_our_interface_only():
    """Run the BPF program's instructions on messages (a tiny interpreter for the opcodes it uses)."""
    fprog, program = rtnl._deladdr_filter(7)
    count, address = struct.unpack("HL", fprog)
    assert address == ctypes.addressof(program)
    code = [(i.code, i.jt, i.jf, i.k) for i in program[:count]]

    def run(packet: bytes) -> int:
        acc, pc = 0, 0
        for _ in range(len(code)):  # no backward jumps: at most one pass
            op, jt, jf, k = code[pc]
            if op == 0x28:
                acc, pc = int.from_bytes(packet[k:k + 2], "big"), pc + 1
            elif op == 0x20:
                acc, pc = int.from_bytes(packet[k:k + 4], "big"), pc + 1
            elif op == 0x15:
                pc = pc + 1 + (jt if acc == k else jf)
            elif op == 0x06:
                return k
        raise AssertionError("the program did not return")

    assert run(deladdr("198.51.100.50", 32, 7)) > 0
    assert run(deladdr("198.51.100.99", 32, 7)) > 0  # another address of ours: parsed in Python
    assert run(deladdr("198.51.100.50", 32, 8)) == 0  # another interface
    assert run(deladdr("198.51.100.50", 32, 7, kind=rtnl.RTM_NEWADDR)) == 0  # additions, refreshes
