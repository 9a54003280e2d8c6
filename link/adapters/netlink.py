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

from link.adapters.rtnl import AddressLifetime

logger = logging.getLogger(__name__)

class InterfaceMissing(RuntimeError):
    pass


class AddressBinder:
    """The VIP on one interface: bind (with a lifetime, or for ever), refresh, unbind, is it there.

    A VIP bound with a lifetime disappears by itself unless `refresh()` is called in time
    (link.adapters.rtnl says why); adding and refreshing go through link.adapters.rtnl, the rest through pyroute2.
    """

    def __init__(self, ifname: str, vip: str, lifetime: int | None = None) -> None:
        iface = ipaddress.ip_interface(vip)
        self.ifname = ifname
        self.address = iface.ip.compressed
        self.prefixlen = iface.network.prefixlen
        self.family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        self.lifetime = lifetime
        self._ipr = IPRoute()
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            self._ipr.close()
            raise InterfaceMissing(f"interface {ifname!r} does not exist")
        self.index: int = found[0]
        try:
            self._requests = AddressLifetime(self.index, vip)
        except BaseException:
            self._ipr.close()
            raise

    def mac(self) -> str:
        link = self._ipr.get_links(self.index)[0]
        return str(link.get_attr("IFLA_ADDRESS"))

    def bind(self) -> bool:
        """Add the VIP (IPv6 without duplicate address detection: a failover must not wait
        for it); False if it was already there, its lifetime then refreshed."""
        return self._requests.add(self.lifetime)

    def refresh(self) -> None:
        """A new lifetime for the VIP (added again if it went away)."""
        self._requests.refresh(self.lifetime)

    def unbind(self) -> bool:
        """Remove the VIP; False if it was not there."""
        return _delete(self._ipr, self.index, self.address, self.prefixlen)

    def is_bound(self) -> bool:
        for msg in self._ipr.get_addr(index=self.index, family=self.family):
            if msg["prefixlen"] == self.prefixlen and msg.get_attr("IFA_ADDRESS") == self.address:
                return True
        return False

    def close(self) -> None:
        self._requests.close()
        self._ipr.close()


def _delete(ipr: IPRoute, index: int, address: str, prefixlen: int) -> bool:
    try:
        ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    except NetlinkError as exc:
        # ENODEV: the interface itself is gone (deleted, a veth whose peer went): nothing is bound there.
        if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH, errno.ENODEV):
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
