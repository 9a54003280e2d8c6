"""This host's `/link/agents/<hostname>` key in etcd, and the peers' (written and read by the
API process, link.api.reserved.start).

The value is {"addresses": [...], "wire": {"address", "port"}, "mac": INTERFACE's MAC (the
workers name the host behind a MAC that claims a VIP with it, link.worker.claim_guard)}, on a
lease of its own (HOSTS_TTL), through the same etcd client the workers use (one
implementation of TLS, deadlines and endpoint rotation). The peers' keys are read when a VIP
is added (link.api.reserved refuses their addresses and a VIP's address under another prefix
length) and after each publication (their heartbeat endpoints, for the supervisor). Keys
without a lease are ignored (anyone could have written them for ever).

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
import threading
import time
from typing import Any, Callable

from link.config import Config
from link.etcd.port import EtcdError, EtcdPort, LeaseNotFound
from link.etcd.values import as_name
from link.vocabulary.agents_key import AGENTS_PREFIX, MAC_FIELD
from link.vocabulary.vip import candidates_prefix_of_address, lock_prefix_of_address

logger = logging.getLogger(__name__)

HOSTS_PREFIX = AGENTS_PREFIX
# Lease of the /link/agents key: a host gone for this long no longer reserves its addresses.
HOSTS_TTL = 30
PUBLISH_EVERY = HOSTS_TTL / 3  # three refreshes per lease, as the workers do
STARTING_FOR = 30.0  # seconds after start when peers are read every second (next_wait)
MAX_PUBLISHED = 256  # addresses read from one peer's key (a bigger value is someone else's)


def hosts_key(hostname: str) -> str:
    return HOSTS_PREFIX + hostname


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
        self._started = time.monotonic()

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

    def next_wait(self) -> float:
        """Seconds to the next publication and read of the peers: every second for the first
        STARTING_FOR seconds (agents started together publish within seconds of each other, and
        without WIRE_KEY_FILE a peer's heartbeats are dropped until it is read here), then
        every PUBLISH_EVERY."""
        return 1.0 if time.monotonic() - self._started < STARTING_FOR else PUBLISH_EVERY

    def start(self) -> None:
        self._started = time.monotonic()

        def loop() -> None:
            while True:
                try:
                    self.publish_once()
                    self.share_wire_peers()
                except Exception:  # a netlink surprise: logged, tried again, never the end of the thread
                    logger.exception("publishing this host's addresses failed")
                if self._stop.wait(self.next_wait()):
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


def wire_endpoint(config: Config, addresses: list[str]) -> dict[str, Any] | None:
    """Where peers send this host's heartbeats: WIRE_ADDRESS, else INTERFACE's first IPv4
    address (else its first IPv6 one that is not link-local)."""
    if config.wire_address:
        return {"address": config.wire_address, "port": config.wire_port}
    parsed = [ipaddress.ip_address(a) for a in addresses]
    usable = sorted((a for a in parsed if not a.is_link_local), key=lambda a: (a.version, a))
    return {"address": usable[0].compressed, "port": config.wire_port} if usable else None
