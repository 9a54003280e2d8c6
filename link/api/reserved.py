"""Addresses that must never become a VIP, checked by the API process when a VIP is added.

Refused (409, the message names the reason): an address on any interface of this host that
link did not put there (its own primary address: a DELETE would cut the host off), the etcd
endpoints' addresses (taking one cuts every agent off etcd), the addresses the peers
publish as their own (the clients' traffic for that peer would come here), and the address of
a VIP already known under another prefix length, on this host or in etcd (one address under
two prefix lengths is two lock keys: two hosts would bind it; "the same address" is
link.vocabulary.vip.address_of, nothing else).

"link did not put there": the arp binder binds a VIP with a lifetime of one lease
(KEEPALIVE_INTERVAL rounded up) and refreshes it while it holds the VIP, so an address whose
remaining lifetime is at most one lease is link's. A VIP of this agent is refused as a
duplicate by the supervisor; one left behind by an agent that died without its state file
is refused here with "retry after KEEPALIVE_INTERVAL": it is gone by then, never for good.
Addresses for ever (or with a longer lifetime: DHCP, SLAAC) are the host's.

Why here, in the API process: the supervisor forks and may hold neither a thread nor a gRPC
channel; the API process does not fork, runs threads already, and is the one process alive
from start-up on, before any VIP exists. It publishes this host's INTERFACE addresses under
/link/agents/ and reads the peers' there when a VIP is added (link.api.agents_directory).
etcd unreachable: the add goes on with the other checks (availability first) and the log
says so. Netlink is a short-lived IPRoute socket per
request. The etcd endpoints' names are resolved at start and on every add; when a name does
not resolve, its last known addresses are used and one WARNING per outage says so.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from link.api.agents_directory import HOSTS_PREFIX, HostsDirectory, wire_endpoint
from link.api.validation import ApiError
from link.config import Config
from link.adapters.capture import interface_mac
from link.vocabulary.vip import address_of, same_address_as
from link.etcd.port import EtcdError
# A leaf module (logging only): how values read from etcd are shown, shared with the workers.
from link.etcd.values import as_name

logger = logging.getLogger(__name__)

RESOLVE_TIMEOUT = 2.0  # seconds for the etcd endpoints' names
FOREVER = 0xFFFFFFFF  # the kernel's "infinite" lifetime


@dataclass(frozen=True)
class HostAddress:
    address: str  # compressed, without prefix
    ifname: str
    valid: int | None  # seconds left; None: for ever


def host_addresses() -> list[HostAddress]:
    """Every address on every interface of this host, both families (one short netlink dump)."""
    from pyroute2 import IPRoute  # imported here: the supervisor imports this module's callers

    found = []
    ipr = IPRoute()
    try:
        for msg in ipr.get_addr():
            address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if not address:
                continue
            info = msg.get_attr("IFA_CACHEINFO")
            valid = None if info is None or info["ifa_valid"] == FOREVER else int(info["ifa_valid"])
            try:
                ifname = socket.if_indextoname(msg["index"])
            except OSError:
                ifname = f"#{msg['index']}"
            found.append(HostAddress(ipaddress.ip_address(address.split("%")[0]).compressed, ifname, valid))
    finally:
        ipr.close()
    return found


def put_by_link(address: HostAddress, lease_ttl: int) -> bool:
    """True when the address looks bound by a link arp binder: a lifetime of one lease at most."""
    return address.valid is not None and address.valid <= lease_ttl


def own_addresses(addresses: Iterable[HostAddress], interface: str, lease_ttl: int) -> list[str]:
    """What this host publishes: INTERFACE's addresses, less link's VIPs and loopback."""
    return sorted({a.address for a in addresses if a.ifname == interface and not put_by_link(a, lease_ttl)
                   and not ipaddress.ip_address(a.address).is_loopback})


def resolve(host: str, timeout: float = RESOLVE_TIMEOUT) -> set[str]:
    """The addresses of a name (or the address itself); {} when it does not resolve in time.

    getaddrinfo has no timeout of its own, so it runs in a daemon thread we stop waiting for."""
    try:
        return {ipaddress.ip_address(host).compressed}
    except ValueError:
        pass
    result: set[str] = set()

    def lookup() -> None:
        try:
            for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
                result.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]).compressed)
        except (OSError, ValueError, UnicodeError):
            pass

    thread = threading.Thread(target=lookup, name="link-resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    return set(result) if not thread.is_alive() else set()


class EndpointAddresses:
    """The etcd endpoints' addresses, resolved at start and on every call of `current()`.

    A name that does not resolve (DNS down, a timeout) keeps its last known addresses, so the
    check does not open when DNS fails; one WARNING per outage of a name says what is used
    instead, and one line says when it resolves again (not one line per add)."""

    def __init__(self, hosts: Iterable[str], resolver: Callable[[str], set[str]] = resolve) -> None:
        self.hosts = tuple(dict.fromkeys(hosts))
        self.resolver = resolver
        self._lock = threading.Lock()
        self._known: dict[str, set[str]] = {}
        self._failing: set[str] = set()

    def current(self) -> dict[str, set[str]]:
        """host -> its addresses (the last known for a name that does not resolve now)."""
        found = {host: self.resolver(host) for host in self.hosts}
        with self._lock:
            for host, addresses in found.items():
                if addresses:
                    self._known[host] = addresses
                    if host in self._failing:
                        self._failing.discard(host)
                        logger.info("the etcd endpoint %s resolves again: %s", host, ", ".join(sorted(addresses)))
                elif host not in self._failing:
                    self._failing.add(host)
                    last = ", ".join(sorted(self._known.get(host, ()))) or "none known: no VIP is refused as its address"
                    logger.warning("the etcd endpoint %s (ETCD_HOSTS) does not resolve within %gs: new VIPs are "
                                   "compared to its last known addresses (%s) until it does", host, RESOLVE_TIMEOUT, last)
            return {host: set(self._known.get(host, ())) for host in self.hosts}

    def start(self) -> None:
        """Resolve once now, in a thread (a slow DNS must not hold up the API's start)."""
        threading.Thread(target=self.current, name="link-resolve-etcd", daemon=True).start()


class ReservedAddresses:
    """`check(vip, managed)`: ApiError(409) naming why the VIP's address may not be taken."""

    def __init__(self, config: Config, directory: HostsDirectory | None,
                 addresses: Callable[[], list[HostAddress]] = host_addresses,
                 resolver: Callable[[str], set[str]] = resolve) -> None:
        self.config = config
        self.directory = directory
        self.addresses = addresses
        self.endpoints = EndpointAddresses((e.host for e in config.etcd_endpoints), resolver)

    def check(self, vip: str, managed: Callable[[], set[str]]) -> None:
        address = address_of(vip).compressed
        known = managed()
        other = same_address_as(vip, (ip for ip in known if ip != vip))
        if other is not None:
            raise ApiError(409, f"ip {vip} is the address of this agent's VIP {other}: one address is one VIP "
                                "(delete that one first to change its prefix length)")
        resolved = self.endpoints.current()
        for endpoint in self.config.etcd_endpoints:
            if address in resolved.get(endpoint.host, ()):
                raise ApiError(409, f"ip {vip} is the address of etcd (ETCD_HOSTS {endpoint}): "
                                    "a VIP there would cut every agent off etcd")
        self._check_local(vip, address, known)
        self._check_etcd(vip, address)

    def _check_local(self, vip: str, address: str, managed: set[str]) -> None:
        for found in self.addresses():
            if found.address != address:
                continue
            if not put_by_link(found, self.config.lease_ttl):
                raise ApiError(409, f"ip {vip} is already an address of this host (on {found.ifname}, not put there "
                                    "by link): as a VIP it would be removed on DELETE and cut the host off")
            if vip in managed:
                return  # this agent's own VIP: the supervisor answers that it is a duplicate
            raise ApiError(409, f"ip {vip} is bound on {found.ifname} with link's short lifetime ({found.valid}s left), "
                                "but this agent does not manage it (left by an agent that stopped?): it goes away "
                                f"by itself; retry after KEEPALIVE_INTERVAL ({self.config.lease_ttl}s)")

    def _check_etcd(self, vip: str, address: str) -> None:
        if self.directory is None:
            return
        try:
            peers = self.directory.peers()
            elsewhere = self.directory.same_address_elsewhere(vip)
        except EtcdError as exc:
            # Availability first: the other checks were made; the log says these were not.
            logger.warning("adding %s without comparing it to the peers' addresses and VIPs: etcd did not answer (%s)",
                           vip, exc)
            return
        host = peers.get(address)
        if host is not None:
            # The host name is the end of a key anyone with etcd access may have written.
            name = as_name(host)
            raise ApiError(409, f"ip {vip} is an address of the peer {name} (published in etcd under "
                                f"{HOSTS_PREFIX}{name}): as a VIP here it would take that host's traffic")
        if elsewhere:
            key, who = elsewhere[0]
            raise ApiError(409, f"ip {vip}: its address is already a VIP with another prefix length in etcd "
                                f"({key}, {who}); one address is one VIP: use that prefix length")


def start(config: Config, on_wire_peers: Callable[[list[dict[str, Any]]], None] | None = None) -> ReservedAddresses:
    """In the API process: publish this host's addresses, and the check for new VIPs. Without
    an etcd client (it could not be made), the check runs without the peers' addresses."""
    directory: HostsDirectory | None = None
    try:
        from link.etcd.grpc_client import GrpcEtcd

        etcd = GrpcEtcd.from_config(config)
    except (OSError, EtcdError, ValueError) as exc:
        logger.warning("no etcd client in the API process (%s): new VIPs are not compared to the peers' addresses", exc)
    else:
        directory = HostsDirectory(
            etcd, config.hostname, lambda: own_addresses(host_addresses(), config.interface, config.lease_ttl),
            lambda addresses: wire_endpoint(config, addresses), on_wire_peers, mac=lambda: interface_mac(config.interface))
        directory.start()
    reserved = ReservedAddresses(config, directory)
    reserved.endpoints.start()
    return reserved
