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
from start-up on, before any VIP exists. It publishes this host's INTERFACE addresses as
`/link/agents/<hostname>` = {"addresses": [...], "wire": {"address", "port"}, "mac": INTERFACE's MAC (the workers name the
host behind a MAC that claims a VIP with it, link.worker.claim_guard)} on a lease of its own (HOSTS_TTL), through
the same etcd client the workers use (one implementation of TLS, deadlines and endpoint
rotation), and reads the peers' keys when a VIP is added. Keys without a lease are ignored
(anyone could have written them for ever). etcd unreachable: the add goes on with the other
checks (availability first) and the log says so. Netlink is a short-lived IPRoute socket per
request. The etcd endpoints' names are resolved at start and on every add; when a name does
not resolve, its last known addresses are used and one WARNING per outage says so.

Not under /link/hosts/: LinK v2 keeps each host's VIP configs there and lists them with the
prefix `/link/hosts/<HOSTNAME>` *without* a trailing slash (models/etcd_storage.go, GetIPs),
so a key `/link/hosts/h1` (or `/link/hosts/h10`) would be read by LinK on h1 as a VIP with
no id and no ip, and LinK v2.0.7 panics at start on it (scheduler.Start: "IP already
assigned"). No LinK version uses /link/agents/.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from link.api.validation import ApiError
from link.config import Config
from link.adapters.capture import interface_mac
from link.vocabulary.agents_key import AGENTS_PREFIX, MAC_FIELD
from link.vocabulary.vip import address_of, candidates_prefix_of_address, lock_prefix_of_address, same_address_as
from link.etcd.port import EtcdError, EtcdPort, LeaseNotFound
# A leaf module (logging only): how values read from etcd are shown, shared with the workers.
from link.etcd.values import as_name

logger = logging.getLogger(__name__)

HOSTS_PREFIX = AGENTS_PREFIX
# Lease of the /link/agents key: a host gone for this long no longer reserves its addresses.
HOSTS_TTL = 30
PUBLISH_EVERY = HOSTS_TTL / 3  # three refreshes per lease, as the workers do
MAX_PUBLISHED = 256  # addresses read from one peer's key (a bigger value is someone else's)
RESOLVE_TIMEOUT = 2.0  # seconds for the etcd endpoints' names
FOREVER = 0xFFFFFFFF  # the kernel's "infinite" lifetime


def hosts_key(hostname: str) -> str:
    return HOSTS_PREFIX + hostname


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


def decode_addresses(value: str) -> list[str]:
    """The addresses of a peer's /link/agents value; [] for anything malformed (never raises)."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):
        return []
    raw = data.get("addresses") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return []
    found = []
    for item in raw[:MAX_PUBLISHED]:
        try:
            found.append(ipaddress.ip_address(item).compressed)
        except (ValueError, TypeError):
            continue
    return found


class HostsDirectory:
    """This host's /link/agents key (published by a thread) and the peers' (read on demand).

    One lock around every etcd call: the publishing thread and the API's request threads
    share one client; each call is bounded by the client's deadline (ETCD deadline)."""

    def __init__(self, etcd: EtcdPort, hostname: str, addresses: Callable[[], list[str]],
                 wire: Callable[[list[str]], dict[str, Any] | None] = lambda addresses: None,
                 on_wire_peers: Callable[[list[dict[str, Any]]], None] | None = None,
                 mac: Callable[[], str | None] = lambda: None) -> None:
        self.etcd = etcd
        self.mac = mac  # INTERFACE's MAC, published for the peers' claim guards
        self.hostname = hostname
        self.addresses = addresses
        # The heartbeat's endpoint published beside the addresses (link.wire), and the peers' sent
        # to the supervisor after each publication (it keeps them for an etcd outage).
        self.wire = wire
        self.on_wire_peers = on_wire_peers
        self._lock = threading.Lock()
        self._lease: int | None = None
        self._published: str | None = None
        self._stop = threading.Event()
        self._failing = False
        self._thread: threading.Thread | None = None

    def publish_once(self) -> None:
        """Keep the lease alive and the key up to date; a failure is logged once per outage."""
        try:
            with self._lock:
                if self._lease is not None:
                    try:
                        self.etcd.keepalive(self._lease)
                    except LeaseNotFound:
                        self._lease = None
                if self._lease is None:
                    self._lease, _ = self.etcd.grant_lease(HOSTS_TTL)
                    self._published = None
                current = self.addresses()
                value = json.dumps({"addresses": current, **({"wire": endpoint} if (endpoint := self.wire(current)) else {}),
                                    **({MAC_FIELD: mac} if (mac := self.mac()) else {})})
                if value != self._published:
                    self.etcd.put(hosts_key(self.hostname), value, self._lease)
                    self._published = value
        except (EtcdError, OSError) as exc:
            if not self._failing:
                logger.warning("could not publish this host's addresses in etcd (%s): retrying every %.0fs", exc, PUBLISH_EVERY)
            self._failing = True
            return
        if self._failing:
            logger.info("this host's addresses are published in etcd again")
        self._failing = False

    def peers(self) -> dict[str, str]:
        """address -> peer host, from the peers' keys that live on a lease (EtcdError if etcd fails)."""
        with self._lock:
            keys = self.etcd.get_prefix(HOSTS_PREFIX)
        found: dict[str, str] = {}
        for key, info in keys.items():
            host = key[len(HOSTS_PREFIX):]
            if host == self.hostname or not info.lease:
                continue
            for address in decode_addresses(info.value):
                found.setdefault(address, host)
        return found

    def wire_peers(self) -> list[dict[str, Any]]:
        """The heartbeat endpoints the other hosts publish, from keys on a lease (EtcdError if etcd fails)."""
        with self._lock:
            keys = self.etcd.get_prefix(HOSTS_PREFIX)
        found = []
        for key, info in sorted(keys.items()):
            if key[len(HOSTS_PREFIX):] == self.hostname or not info.lease:
                continue
            try:
                endpoint = json.loads(info.value).get("wire")
            except (ValueError, RecursionError, AttributeError):
                continue
            if isinstance(endpoint, dict):
                found.append(endpoint)  # checked by the supervisor (link.wire.peers.endpoints_from_json)
        return found[:MAX_PUBLISHED]

    def share_wire_peers(self) -> None:
        if self.on_wire_peers is None:
            return
        try:
            peers = self.wire_peers()
        except EtcdError:
            return  # etcd is away: the supervisor keeps the last list
        self.on_wire_peers(peers)

    def start(self) -> None:
        def loop() -> None:
            while True:
                try:
                    self.publish_once()
                    self.share_wire_peers()
                except Exception:  # a netlink surprise: logged, tried again, never the end of the thread
                    logger.exception("publishing this host's addresses failed")
                if self._stop.wait(PUBLISH_EVERY):
                    return

        self._thread = threading.Thread(target=loop, name="link-hosts-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()


    def same_address_elsewhere(self, vip: str) -> list[tuple[str, str]]:
        """(key, who), fit to show, of the locks (lease or not) and leased candidates in etcd of
        a VIP with the address of `vip` and another prefix length (EtcdError if etcd fails)."""
        own_suffix = "_" + vip.rsplit("/", 1)[1]
        lock_prefix, candidate_prefix = lock_prefix_of_address(vip), candidates_prefix_of_address(vip)
        with self._lock:
            locks = self.etcd.get_prefix(lock_prefix)
            candidates = self.etcd.get_prefix(candidate_prefix)
        found = []
        for key, info in sorted(locks.items()):
            # A lock without a lease counts too: the workers take it over, then bind that VIP.
            if not key.endswith(own_suffix) and _prefix_length(key[len(lock_prefix):]):
                found.append((key, f"held by {as_name(info.value)}"))
        for key, info in sorted(candidates.items()):
            length, _, host = key[len(candidate_prefix):].partition("/")
            if info.lease and "_" + length != own_suffix and _prefix_length(length):
                found.append((f"{candidate_prefix}{length}/{as_name(host)}", f"{as_name(host)} competes for it"))
        return found


def _prefix_length(text: str) -> bool:
    """Whether the end of a key names a prefix length (a key of a VIP, not someone's junk)."""
    return text.isdigit() and len(text) <= 3 and int(text) <= 128


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


def wire_endpoint(config: Config, addresses: list[str]) -> dict[str, Any] | None:
    """Where peers send this host's heartbeats: WIRE_ADDRESS, else INTERFACE's first IPv4
    address (else its first IPv6 one that is not link-local)."""
    if config.wire_address:
        return {"address": config.wire_address, "port": config.wire_port}
    parsed = [ipaddress.ip_address(a) for a in addresses]
    usable = sorted((a for a in parsed if not a.is_link_local), key=lambda a: (a.version, a))
    return {"address": usable[0].compressed, "port": config.wire_port} if usable else None


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
