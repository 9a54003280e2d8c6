"""What a VIP is: parsing user input and naming its etcd keys (LinK v2 compatible)."""
from __future__ import annotations

import collections.abc
import dataclasses
import enum
import ipaddress
import typing
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from link.vocabulary import binder_kinds

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


# -- what a host is told about a VIP: its fields, defined once --------------------------------
class Role(enum.Enum):
    """Who sets a field of VipSpec, and when (its metadata): the one list that the API's
    validation, the pipe protocol, the supervisor and the state file read."""

    IDENTITY = "identity"  # the agent (id) or the request's own key (ip): never a setting
    ON_ADD = "add"  # a setting given when the VIP is added (to change it: delete the VIP, add it again)
    ON_ADD_AND_UPDATE = "add and update"  # a setting given on add and changed live (PUT/PATCH)


ROLE, LOAD = "role", "load"
BINDER_SETTINGS = "binder_settings"  # on the wire, named after its binder: "command": {...}


def _field(role: Role, load: Callable[[Any], Any], default: Any = dataclasses.MISSING) -> Any:
    # `load` makes the field's value from its JSON form (None when absent): a vips.json written
    # by an older link, without the fields added since, still loads.
    return dataclasses.field(default=default, metadata={ROLE: role, LOAD: load})


def _optional(kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else kind(value)


def _binder(value: Any) -> str:
    binder = str(value or binder_kinds.DEFAULT)
    if binder not in binder_kinds.KINDS:
        raise ValueError(f"unknown binder {binder!r}")
    return binder


@dataclass(frozen=True, repr=False)
class VipSpec:
    """What a host was told about one VIP: kept in STATE_DIR, given to its worker.

    `binder` says how the VIP is put in place on the host that wins it (link.worker.binders,
    its kinds in link.vocabulary.binder_kinds), `binder_settings` that kind's settings (None for
    `arp`); they may hold a secret (a webhook's), which `public_binder()` masks and the repr
    leaves out.
    """

    id: str = _field(Role.IDENTITY, str)
    ip: str = _field(Role.IDENTITY, str)
    checks: tuple[dict[str, Any], ...] = _field(Role.ON_ADD_AND_UPDATE, lambda value: tuple(value or ()), ())
    healthcheck_interval: float = _field(Role.ON_ADD_AND_UPDATE, lambda value: float(value or 0.0), 0.0)  # 0: the agent's HEALTH_CHECK_INTERVAL
    fault_policy: str = _field(Role.ON_ADD_AND_UPDATE, lambda value: str(value or ""), "")  # "": the agent's FAULT_POLICY
    priority: int | None = _field(Role.ON_ADD_AND_UPDATE, _optional(int), None)  # None: the host's PRIORITY (signals shift it)
    preempt: bool | None = _field(Role.ON_ADD_AND_UPDATE, _optional(bool), None)  # None: the agent's PREEMPT
    # A program and its arguments told of every state change (link.worker.notify); (): the agent's NOTIFY.
    notify: tuple[str, ...] = _field(Role.ON_ADD_AND_UPDATE, lambda value: tuple(value or ()), ())
    # A leader key to follow instead of an election (link.vocabulary.leader_keys): "" elects.
    follow: str = _field(Role.ON_ADD, lambda value: str(value or ""), "")
    follow_value: str = _field(Role.ON_ADD, lambda value: str(value or ""), "")  # "": the agent's HOSTNAME
    binder: str = _field(Role.ON_ADD, _binder, binder_kinds.DEFAULT)
    binder_settings: dict[str, Any] | None = _field(Role.ON_ADD, _optional(dict), None)

    def __repr__(self) -> str:
        # Never a binder's secret, whatever logs a spec.
        return f"VipSpec(id={self.id!r}, ip={self.ip!r}, binder={self.binder!r})"

    def to_json(self) -> dict[str, Any]:
        """The JSON form (state file, the worker's `settings` command): a POST /ips body plus `id`."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == BINDER_SETTINGS:
                if value is not None:
                    data[self.binder] = dict(value)
            else:
                data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    def public_binder(self) -> dict[str, Any]:
        """The binder as the API shows it: its kind and settings, secrets masked."""
        shown: dict[str, Any] = {"binder": self.binder}
        kind = binder_kinds.KINDS.get(self.binder)
        if kind is not None and kind.settings and self.binder_settings is not None:
            shown[self.binder] = kind.public(self.binder_settings)
        return shown

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "VipSpec":
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.metadata[ROLE] is Role.IDENTITY:
                values[f.name] = f.metadata[LOAD](data[f.name])
            elif f.name == BINDER_SETTINGS:
                settings = data.get(values["binder"])
                values[f.name] = dict(settings) if isinstance(settings, Mapping) else None
            else:
                values[f.name] = f.metadata[LOAD](data.get(f.name))
        return cls(**values)


def setting_names(*, update: bool = False) -> tuple[str, ...]:
    """The JSON names of the settings a request may carry: on add, or on update (`update`).
    The binder's settings are named after their kind (`command`, `webhook`...)."""
    roles = (Role.ON_ADD_AND_UPDATE,) if update else (Role.ON_ADD, Role.ON_ADD_AND_UPDATE)
    names: list[str] = []
    for f in dataclasses.fields(VipSpec):
        if f.metadata[ROLE] in roles:
            names.extend(binder_kinds.settings_fields() if f.name == BINDER_SETTINGS else (f.name,))
    return tuple(names)


class SettingNames(collections.abc.Sequence[str]):
    """`setting_names()` as a sequence read afresh at each use, for the pipe protocol's
    messages: a binder kind registered after import (a test's) is carried too."""

    def __init__(self, *, update: bool = False) -> None:
        self.update = update

    @typing.overload
    def __getitem__(self, index: int) -> str: ...

    @typing.overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return setting_names(update=self.update)[index]

    def __len__(self) -> int:
        return len(setting_names(update=self.update))

    def __repr__(self) -> str:
        return repr(setting_names(update=self.update))
