"""Binding and unbinding a VIP on an interface with netlink (pyroute2 0.7 and 0.9 alike).

Used by the worker (one IPRoute socket for its whole life) and by the supervisor, which opens
one briefly to remove the VIP a dead worker left behind: a killed process keeps its address
on the interface, and two hosts answering ARP for one VIP is the failure we exist to prevent.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

logger = logging.getLogger(__name__)

# Without it an IPv6 address stays "tentative" for the duplicate address detection (about 1 s)
# and cannot be used: a failover must not wait for it.
IFA_F_NODAD = 0x02


class InterfaceMissing(RuntimeError):
    pass


class AddressBinder:
    """The VIP on one interface: bind, unbind, is it there."""

    def __init__(self, ifname: str, vip: str) -> None:
        iface = ipaddress.ip_interface(vip)
        self.ifname = ifname
        self.address = iface.ip.compressed
        self.prefixlen = iface.network.prefixlen
        self.family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        self._ipr = IPRoute()
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            self._ipr.close()
            raise InterfaceMissing(f"interface {ifname!r} does not exist")
        self.index: int = found[0]

    def mac(self) -> str:
        link = self._ipr.get_links(self.index)[0]
        return str(link.get_attr("IFLA_ADDRESS"))

    def bind(self) -> bool:
        """Add the VIP; False if it was already there."""
        extra = {"flags": IFA_F_NODAD} if self.family == socket.AF_INET6 else {}
        try:
            self._ipr.addr("add", index=self.index, address=self.address, prefixlen=self.prefixlen, **extra)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise
        return True

    def unbind(self) -> bool:
        """Remove the VIP; False if it was not there."""
        return _delete(self._ipr, self.index, self.address, self.prefixlen)

    def is_bound(self) -> bool:
        for msg in self._ipr.get_addr(index=self.index, family=self.family):
            if msg["prefixlen"] == self.prefixlen and msg.get_attr("IFA_ADDRESS") == self.address:
                return True
        return False

    def close(self) -> None:
        self._ipr.close()


class AddressEvents:
    """Tells whether any address of this host changed since the last look.

    A raw netlink socket subscribed to address notifications; nothing is parsed: any message
    (or an overflow) means "look again". Checking the VIP with a netlink dump through pyroute2
    costs ~2 ms of CPU; doing it only after a change keeps an idle holder cheap.
    """

    GROUPS = 0x10 | 0x100  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)  # NETLINK_ROUTE
        self._sock.bind((0, self.GROUPS))

    def changed(self) -> bool:
        seen = False
        for _ in range(10000):  # bounded drain; what is left is seen next time
            try:
                if not self._sock.recv(65536):
                    break
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Too many changes at once and some were lost: say "changed" all the same.
            seen = True
        return seen

    def close(self) -> None:
        self._sock.close()


def _delete(ipr: IPRoute, index: int, address: str, prefixlen: int) -> bool:
    try:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
            return False
        raise
    return True


def remove_address(ifname: str, vip: str) -> bool:
    """Remove a VIP from an interface with a short-lived socket; False if it was not there."""
    iface = ipaddress.ip_interface(vip)
    ipr = IPRoute()
    try:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return False
        return _delete(ipr, found[0], iface.ip.compressed, iface.network.prefixlen)
    finally:
        ipr.close()
