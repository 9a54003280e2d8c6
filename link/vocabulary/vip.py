"""What a VIP is: parsing user input and naming its etcd keys (LinK v2 compatible)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable

# LinK v2 keeps every key under this directory; sharing it lets both agents share a cluster.
ETCD_DIRECTORY = "/link"


class VipError(ValueError):
    """The text given is not a usable virtual IP; the message says why."""


# Addresses that are not one host's unicast address, with the reason the API gives (400).
# IPv4-mapped and -compatible IPv6 addresses name an IPv4 address in another spelling: the
# checks that compare a VIP with the host's, the peers' and etcd's addresses (and Python 3.11's
# is_loopback) see them as other addresses, so `::ffff:127.0.0.1` would pass them all.
# Link-local addresses stay allowed: LinK v2 takes them, and IPv6 VRRP setups use them as VIPs.
_NOT_A_HOST: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("0.0.0.0/8"), "in 0.0.0.0/8 (\"this network\": never a destination)"),
    (ipaddress.ip_network("240.0.0.0/4"), "in 240.0.0.0/4 (reserved, and 255.255.255.255 is the limited broadcast)"),
    (ipaddress.ip_network("::ffff:0:0/96"), "an IPv4-mapped IPv6 address: give the IPv4 address itself"),
    (ipaddress.ip_network("::/96"), "an IPv4-compatible IPv6 address (deprecated by RFC 4291): give the IPv4 address itself"),
)


def parse_vip(text: object) -> str:
    """Return the VIP in canonical CIDR form; a bare address means a single host (/32, /128).

    A VIP is one address: "198.51.100.0/24" is refused because it names a network, not a host
    address, whereas "198.51.100.50/24" is accepted (the prefix is the one the address gets on
    the interface, as with `ip addr add`). Addresses that are no host's unicast address (see
    _NOT_A_HOST, loopback, multicast, unspecified) and IPv6 zones (`%eth0`) are refused.
    """
    if not isinstance(text, str) or not text.strip():
        raise VipError("ip must be a non-empty string such as 198.51.100.50/32")
    raw = text.strip()
    if "%" in raw:
        # Python would drop the zone silently; LinK (Go's net.ParseCIDR) refuses it.
        raise VipError(f"ip {raw!r}: a zone (%...) is not part of a virtual IP; the agent's INTERFACE is its link")
    try:
        iface = ipaddress.ip_interface(raw)
    except ValueError:
        raise VipError(f"ip {raw!r} is not an IPv4 or IPv6 address (expected e.g. 198.51.100.50/32)") from None
    net = iface.network
    if net.prefixlen < net.max_prefixlen and iface.ip == net.network_address:
        raise VipError(f"ip {raw!r} is a network address, not a host address")
    if iface.ip.is_unspecified or iface.ip.is_multicast or iface.ip.is_loopback:
        raise VipError(f"ip {raw!r} cannot be a virtual IP (unspecified, multicast or loopback)")
    for reserved, why in _NOT_A_HOST:
        if iface.ip in reserved:
            raise VipError(f"ip {raw!r} cannot be a virtual IP: it is {why}")
    if isinstance(iface.ip, ipaddress.IPv4Address) and net.prefixlen < net.max_prefixlen and iface.ip == net.broadcast_address:
        raise VipError(f"ip {raw!r} is the broadcast address of its network")
    return f"{iface.ip.compressed}/{net.prefixlen}"


def address_of(vip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The address of a VIP, without its prefix: what "the same VIP" means.

    198.51.100.5/32 and 198.51.100.5/24 are one address: two VIPs with it would be bound by
    two hosts at once (their locks are different keys). Every duplicate test compares this,
    never the CIDR strings. `vip` is canonical (parse_vip); ValueError otherwise.
    """
    return ipaddress.ip_interface(vip).ip


def same_address_as(vip: str, others: Iterable[str]) -> str | None:
    """The first of `others` (canonical VIPs) with the address of `vip`, whatever its prefix;
    None when there is none. The supervisor's duplicate test on add. An item of `others` that
    is no VIP at all is skipped (it has no address to share), never a crash."""
    address = address_of(vip)
    for other in others:
        try:
            if address_of(other) == address:
                return other
        except ValueError:
            continue
    return None


def lock_prefix_of_address(vip: str) -> str:
    """The start of the lock keys of every VIP with the address of `vip`, any prefix length:
    `/link/default/198.51.100.5_` (the "_" ends the address: .50 is not matched)."""
    return f"{ETCD_DIRECTORY}/default/{address_of(vip).compressed}_"


def candidates_prefix_of_address(vip: str) -> str:
    """The same for the candidate keys: `/link/ips/198.51.100.5_`."""
    return f"{ETCD_DIRECTORY}/ips/{address_of(vip).compressed}_"


def storable(vip: str) -> str:
    """LinK v2's spelling of a VIP inside a key: the "/" of the prefix becomes "_"."""
    return vip.replace("/", "_")


def lock_key(vip: str) -> str:
    """The key whose holder binds the VIP: `/link/default/198.51.100.50_32`, value = hostname."""
    return f"{ETCD_DIRECTORY}/default/{storable(vip)}"


def candidate_key(vip: str, hostname: str) -> str:
    """The key a host writes (on its lease) to say it competes for the VIP."""
    return f"{ETCD_DIRECTORY}/ips/{storable(vip)}/{hostname}"


def candidates_prefix(vip: str) -> str:
    return f"{ETCD_DIRECTORY}/ips/{storable(vip)}/"


BINDERS = ("arp", "command", "webhook")
SECRET_MASK = "***"


@dataclass(frozen=True, repr=False)
class VipSpec:
    """What a host was told about one VIP: kept in STATE_DIR, given to its worker.

    `binder` says how the VIP is put in place on the host that wins it (link.worker.binders):
    `arp` (netlink + gratuitous ARP/NA), `command` (the user's programs, settings in `command`)
    or `webhook` (a signed HTTP POST, settings in `webhook`, whose `secret` never leaves the
    agent: `public_binder()` masks it and the repr leaves the settings out).
    """

    id: str
    ip: str
    checks: tuple[dict[str, Any], ...] = ()
    healthcheck_interval: float = 0.0  # 0: the agent's HEALTH_CHECK_INTERVAL
    fault_policy: str = ""  # "": the agent's FAULT_POLICY
    priority: int | None = None  # None: the host's PRIORITY (which signals can shift)
    preempt: bool | None = None  # None: the agent's PREEMPT
    binder: str = "arp"
    command: dict[str, Any] | None = None  # binder "command": activate, deactivate, ensure, timeout, ensure_interval
    webhook: dict[str, Any] | None = None  # binder "webhook": url, secret, timeout

    def __repr__(self) -> str:
        # Never the webhook's secret, whatever logs a spec.
        return f"VipSpec(id={self.id!r}, ip={self.ip!r}, binder={self.binder!r})"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "ip": self.ip, "checks": list(self.checks),
                                "healthcheck_interval": self.healthcheck_interval, "fault_policy": self.fault_policy,
                                "priority": self.priority, "preempt": self.preempt, "binder": self.binder}
        if self.command is not None:
            data["command"] = dict(self.command)
        if self.webhook is not None:
            data["webhook"] = dict(self.webhook)
        return data

    def public_binder(self) -> dict[str, Any]:
        """The binder as the API shows it: its kind and settings, the webhook's secret masked."""
        shown: dict[str, Any] = {"binder": self.binder}
        if self.binder == "command" and self.command is not None:
            shown["command"] = dict(self.command)
        if self.binder == "webhook" and self.webhook is not None:
            shown["webhook"] = {**self.webhook, "secret": SECRET_MASK}
        return shown

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VipSpec":
        # Fields added later have defaults: a vips.json written by an older link still loads.
        binder = str(data.get("binder") or "arp")
        if binder not in BINDERS:
            raise ValueError(f"unknown binder {binder!r}")
        command, webhook = data.get("command"), data.get("webhook")
        return cls(
            id=str(data["id"]), ip=str(data["ip"]), checks=tuple(data.get("checks") or ()),
            healthcheck_interval=float(data.get("healthcheck_interval") or 0.0),
            fault_policy=str(data.get("fault_policy") or ""),
            priority=None if data.get("priority") is None else int(data["priority"]),
            preempt=None if data.get("preempt") is None else bool(data["preempt"]),
            binder=binder,
            command=dict(command) if isinstance(command, dict) else None,
            webhook=dict(webhook) if isinstance(webhook, dict) else None,
        )
