"""The agent's settings, read from LinK's environment variables and checked once at start-up."""
from __future__ import annotations

import math
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from link import probe_budget
from link.scripts import ScriptRefused, check_program, check_scripts_dir
from link.vocabulary import fault_policies
from link.wire import settings as wire_settings
from link.wire.peers import Endpoint
from link.security_settings import (
    LOOPBACK_ADDRESSES,
    ConfigError as ConfigError,  # re-exported: callers catch link.config.ConfigError
    ScriptUser,
    is_loopback,
    origin as origin,  # re-exported: link.worker.binders.webhook imports it from here
    parse_bind_addresses,
    parse_script_user,
    parse_webhook_allowed_urls,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(name: str, text: str) -> float:
    """Seconds from "3" (seconds, as LinK), "3s", "500ms", "1.5s" or Go-style "1m30s"."""
    raw = text.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ConfigError(f"{name}={text!r} is not a duration (use e.g. 3, 3s, 500ms)")
    return total


DEFAULT_SCRIPTS_DIR = "/etc/link/scripts"
DEFAULT_MAX_VIPS = 100
DEFAULT_NOTIFY_TIMEOUT = 5.0
MAX_MAX_VIPS = 1000
DEFAULT_BOOT_CONCURRENCY = 16  # a 2-core host: both cores busy with imports, etcd still served
DEFAULT_BOOT_RATE = 20.0  # forks per second: 500 VIPs forked within 25 s


@dataclass(frozen=True)
class EtcdEndpoint:
    host: str
    port: int
    secure: bool

    def __str__(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Config:
    interface: str
    hostname: str
    etcd_endpoints: tuple[EtcdEndpoint, ...]
    state_dir: str = "/var/lib/link"
    port: int = 1313
    # Where the API listens. Without PASSWORD only loopback, unless ALLOW_UNAUTHENTICATED_API.
    bind_addresses: tuple[str, ...] = LOOPBACK_ADDRESSES
    allow_unauthenticated_api: bool = False
    user: str = ""
    password: str = ""
    keepalive_interval: float = 2.0
    keepalive_retry: int = 3
    arp_gratuitous_interval: float = 1.0
    arp_gratuitous_count: int = 3
    etcd_tls_cert: str = ""
    etcd_tls_key: str = ""
    etcd_cacert: str = ""
    logger_level: str = "INFO"
    logger_type: str = "text"  # "json": one JSON object per line (LinK's LOGGER_TYPE)
    metrics_auth: bool = True  # GET /metrics behind the API's basic auth (when PASSWORD is set)
    health_check_interval: float = 1.0
    health_check_timeout: float = 1.0
    fail_count_before_failover: int = 3
    fault_policy: str = fault_policies.DEFAULT.value
    priority: int = 10
    preempt: bool = True
    preempt_delay: float = 3.0
    # Programs (EXEC checks, command binders) only from here, under the rules of link.scripts.
    scripts_dir: str = DEFAULT_SCRIPTS_DIR
    # Who those programs run as (keepalived's script_user): never root unless said so.
    script_user: ScriptUser = field(default_factory=lambda: ScriptUser("", os.getuid(), os.getgid()))
    # keepalived's notify: a program (and its arguments) run on every state change of every
    # VIP that names none of its own (link.worker.notify), killed after NOTIFY_TIMEOUT.
    notify: tuple[str, ...] = ()
    notify_timeout: float = DEFAULT_NOTIFY_TIMEOUT
    # Origins (scheme://host:port) a webhook binder may call; none: webhook binders are refused.
    webhook_allowed_urls: tuple[str, ...] = ()
    # Most VIPs this agent takes (each is a process; the benchmark's 2-core hosts broke at 200).
    max_vips: int = DEFAULT_MAX_VIPS
    # Probe frames per second for all this host's VIPs (link.probe_budget): each VIP's probe
    # period is max(2 s, VIPs / this), so 1000 VIPs do not send 500 broadcast ARP per second.
    claim_probe_rate: float = probe_budget.DEFAULT_RATE
    # The heartbeat between agents (link.wire): its UDP port, period, static peers, HMAC key file
    # (the key is read by the supervisor, never kept here) and the address peers send to.
    wire_port: int = wire_settings.DEFAULT_PORT
    wire_interval: float = 0.8  # 3 silent intervals + the probe stay under the 3 s promise (1 s: 3.0-3.05 s)
    wire_peers: tuple[Endpoint, ...] = ()
    wire_key_file: str = ""
    wire_address: str = ""
    # Interfaces whose carrier this host's VIPs need (INTERFACE and TRACK_INTERFACES; none: empty).
    track_interfaces: tuple[str, ...] = ()
    # The boot gate (link.supervisor.boot_gate): most workers booting at once, forks per second.
    boot_concurrency: int = DEFAULT_BOOT_CONCURRENCY
    boot_rate: float = DEFAULT_BOOT_RATE

    @property
    def bind_address(self) -> str:
        """The API's addresses as one string, for logs and the process title."""
        return ",".join(f"[{a}]" if ":" in a else a for a in self.bind_addresses)

    @property
    def api_exposed(self) -> bool:
        """True when the API listens on an address other hosts can reach."""
        return not all(is_loopback(a) for a in self.bind_addresses)

    @property
    def lease_ttl(self) -> int:
        """etcd grants whole seconds: the lease is KEEPALIVE_INTERVAL rounded up."""
        return max(1, math.ceil(self.keepalive_interval - 1e-9))

    @property
    def tick(self) -> float:
        """Time between two election cycles: three per lease, so a lost refresh is retried
        twice before the lease can expire (and KEEPALIVE_RETRY=3 failures take about one
        lease). Each idle cycle costs one etcd call: more cycles would cost CPU per VIP."""
        return self.lease_ttl / 3.0

    @property
    def etcd_deadline(self) -> float:
        """Deadline of every etcd call: one tick, so a dead etcd never stalls a cycle longer."""
        return max(0.2, self.tick)

    @property
    def auth_enabled(self) -> bool:
        # Only PASSWORD switches auth on: USER is set by every login shell.
        return bool(self.password)


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range ({lo}..{hi})")
    return value


def _rate(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number (per second)") from None
    if not lo <= value <= hi:  # also refuses nan and inf
        raise ConfigError(f"{name}={raw!r} is out of range ({lo:g}..{hi:g} per second)")
    return value


def _duration(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = parse_duration(name, raw)
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={raw!r} is out of range ({lo:g}s..{hi:g}s)")
    return value


def parse_etcd_hosts(raw: str) -> tuple[EtcdEndpoint, ...]:
    endpoints = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        url = urlsplit(item if "://" in item else "http://" + item)
        try:
            port = url.port or 2379
        except ValueError:
            raise ConfigError(f"ETCD_HOSTS entry {item!r} has a bad port") from None
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
            raise ConfigError(f"ETCD_HOSTS entry {item!r} is not an etcd URL like http://198.51.100.1:2379")
        endpoints.append(EtcdEndpoint(url.hostname, port, url.scheme == "https"))
    if not endpoints:
        raise ConfigError("ETCD_HOSTS is empty (give comma-separated URLs like http://198.51.100.1:2379)")
    if len({e.secure for e in endpoints}) > 1:
        raise ConfigError("ETCD_HOSTS mixes http:// and https:// endpoints")
    return tuple(endpoints)


FAULT_POLICIES = fault_policies.NAMES  # the first is the default
LOGGER_TYPES = ("text", "json")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not true or false")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def _readable_file(env: Mapping[str, str], name: str) -> str:
    path = env.get(name, "").strip()
    if path and not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={path!r} is not a readable file")
    return path


def _notify(env: Mapping[str, str], scripts_dir: str, script_user: ScriptUser) -> tuple[str, ...]:
    """NOTIFY: a program and its arguments (shell-like quoting, no shell), which must pass
    SCRIPTS_DIR's rule now (link.scripts.check_program): one line at start rather than a
    failed run at the first transition."""
    raw = env.get("NOTIFY", "").strip()
    if not raw:
        return ()
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise ConfigError(f"NOTIFY={raw[:200]!r}: {exc}") from None
    try:
        check_program(argv[0], scripts_dir, run_as=script_user)
    except ScriptRefused as exc:
        raise ConfigError(f"NOTIFY {exc}") from None
    return tuple(argv)


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def parse_track_interfaces(raw: str, interface: str, check_interface: bool = True) -> tuple[str, ...]:
    """TRACK_INTERFACES: INTERFACE, then the interfaces listed (comma-separated); "none" tracks
    nothing (LinK v2's behaviour: the VIP stays whatever the link does)."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if [item.lower() for item in items] == ["none"]:
        return ()
    if "none" in (item.lower() for item in items):
        raise ConfigError(f"TRACK_INTERFACES={raw.strip()[:80]!r}: none goes alone (it tracks nothing, not even INTERFACE)")
    names: list[str] = [interface]
    for name in items:
        # The kernel's rule for a name (dev_valid_name): 1-15 bytes, no "/", ":" or space, not . or ..
        if (len(name.encode()) > 15 or name in (".", "..") or any(c in "/:" or c.isspace() for c in name)
                or not name.isprintable()):
            raise ConfigError(f"TRACK_INTERFACES: {name[:40]!r} is not an interface name (or give none alone to track nothing)")
        if check_interface and not interface_exists(name):
            raise ConfigError(f"TRACK_INTERFACES: no such network interface {name!r} on this host")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class OneShotConfig:
    """What `link-agent associate|dissociate IP` reads: no etcd, no API, no state dir."""

    interface: str
    arp_gratuitous_count: int = 3
    arp_gratuitous_interval: float = 1.0


def load_oneshot(env: Mapping[str, str] | None = None, check_interface: bool = True) -> OneShotConfig:
    """INTERFACE and the ARP settings only: a broken etcd setting must not stop a manual recovery."""
    env = os.environ if env is None else env
    interface = env.get("INTERFACE", "").strip()
    if not interface:
        raise ConfigError("INTERFACE is required: the interface where the IP is bound (e.g. INTERFACE=eth1)")
    if check_interface and not interface_exists(interface):
        raise ConfigError(f"INTERFACE={interface!r}: no such network interface on this host")
    return OneShotConfig(
        interface=interface,
        arp_gratuitous_count=_int(env, "ARP_GRATUITOUS_COUNT", 3, 0, 100),
        arp_gratuitous_interval=_duration(env, "ARP_GRATUITOUS_INTERVAL", 1.0, 0.0, 60.0),
    )


def load(env: Mapping[str, str] | None = None, check_interface: bool = True) -> Config:
    """Build the Config from the environment; raise ConfigError naming the first bad variable."""
    env = os.environ if env is None else env
    interface = env.get("INTERFACE", "").strip()
    if not interface:
        raise ConfigError("INTERFACE is required: the interface where VIPs are bound (e.g. INTERFACE=eth1)")
    if check_interface and not interface_exists(interface):
        raise ConfigError(f"INTERFACE={interface!r}: no such network interface on this host")
    hostname = env.get("HOSTNAME", "").strip() or socket.gethostname()
    if "/" in hostname or any(c.isspace() for c in hostname):
        raise ConfigError(f"HOSTNAME={hostname!r} must not contain '/' or spaces")
    if not hostname.isprintable() or len(hostname.encode()) > wire_settings.MAX_HOSTNAME:
        # It travels in every heartbeat (link.wire.codec), whose peers refuse anything else.
        raise ConfigError(f"HOSTNAME={hostname[:80]!r} must be printable and at most {wire_settings.MAX_HOSTNAME} bytes")
    level = env.get("LOGGER_LEVEL", "info").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR"):
        raise ConfigError(f"LOGGER_LEVEL={level.lower()!r} is not one of debug, info, warn, error")
    endpoints = parse_etcd_hosts(env.get("ETCD_HOSTS", "http://127.0.0.1:2379"))
    cert, key, ca = (_readable_file(env, n) for n in ("ETCD_TLS_CERT", "ETCD_TLS_KEY", "ETCD_CACERT"))
    if bool(cert) != bool(key):
        raise ConfigError("ETCD_TLS_CERT and ETCD_TLS_KEY go together: set both or neither")
    keepalive = _duration(env, "KEEPALIVE_INTERVAL", 2.0, 0.5, 3600.0)
    password = env.get("PASSWORD", "")
    bind_addresses = parse_bind_addresses(env.get("BIND_ADDRESS", ""), password)
    allow_unauthenticated = _bool(env, "ALLOW_UNAUTHENTICATED_API", False)
    if not password and not allow_unauthenticated and not all(is_loopback(a) for a in bind_addresses):
        raise ConfigError(f"BIND_ADDRESS={env.get('BIND_ADDRESS', '').strip()!r} is not loopback and PASSWORD is not set: "
                          "set PASSWORD, or ALLOW_UNAUTHENTICATED_API=true to serve it to the network without one")
    scripts_dir = env.get("SCRIPTS_DIR", "").strip() or DEFAULT_SCRIPTS_DIR
    if not os.path.isabs(scripts_dir) or "\0" in scripts_dir:
        raise ConfigError(f"SCRIPTS_DIR={scripts_dir[:200]!r} must be an absolute path")
    scripts_dir = os.path.normpath(scripts_dir)
    try:
        # Whether it exists is said at start (link.scripts.warn_stored_programs): not an error.
        check_scripts_dir(scripts_dir)
    except ScriptRefused as exc:
        raise ConfigError(f"SCRIPTS_DIR {exc}") from None
    script_user = parse_script_user(env.get("SCRIPT_USER", ""))
    notify = _notify(env, scripts_dir, script_user)
    wire_port = _int(env, "WIRE_PORT", wire_settings.DEFAULT_PORT, 1, 65535)
    wire_key_file = env.get("WIRE_KEY_FILE", "").strip()
    wire_settings.read_key(wire_key_file)  # checked now: a bad key file is one line at start, not a silent wire
    return Config(
        interface=interface,
        hostname=hostname,
        etcd_endpoints=endpoints,
        state_dir=env.get("STATE_DIR", "").strip() or "/var/lib/link",
        port=_int(env, "PORT", 1313, 1, 65535),
        bind_addresses=bind_addresses,
        allow_unauthenticated_api=allow_unauthenticated,
        user=env.get("USER", "") if password else "",
        password=password,
        keepalive_interval=keepalive,
        keepalive_retry=_int(env, "KEEPALIVE_RETRY", 3, 1, 100),
        arp_gratuitous_interval=_duration(env, "ARP_GRATUITOUS_INTERVAL", 1.0, 0.0, 60.0),
        arp_gratuitous_count=_int(env, "ARP_GRATUITOUS_COUNT", 3, 0, 100),
        etcd_tls_cert=cert,
        etcd_tls_key=key,
        etcd_cacert=ca,
        logger_level="WARNING" if level == "WARN" else level,
        logger_type=_choice(env, "LOGGER_TYPE", LOGGER_TYPES),
        metrics_auth=_bool(env, "METRICS_AUTH", True),
        health_check_interval=_duration(env, "HEALTH_CHECK_INTERVAL", 1.0, 0.1, 3600.0),
        health_check_timeout=_duration(env, "HEALTH_CHECK_TIMEOUT", 1.0, 0.05, 600.0),
        fail_count_before_failover=_int(env, "FAIL_COUNT_BEFORE_FAILOVER", 3, 1, 1000),
        fault_policy=_choice(env, "FAULT_POLICY", FAULT_POLICIES),
        priority=_int(env, "PRIORITY", 10, 0, 255),
        preempt=_bool(env, "PREEMPT", True),
        preempt_delay=_duration(env, "PREEMPT_DELAY", 3.0, 0.0, 3600.0),
        scripts_dir=scripts_dir,
        script_user=script_user,
        notify=notify,
        notify_timeout=_duration(env, "NOTIFY_TIMEOUT", DEFAULT_NOTIFY_TIMEOUT, 0.1, 600.0),
        webhook_allowed_urls=parse_webhook_allowed_urls(env.get("WEBHOOK_ALLOWED_URLS", "")),
        max_vips=_int(env, "MAX_VIPS", DEFAULT_MAX_VIPS, 1, MAX_MAX_VIPS),
        claim_probe_rate=_rate(env, "CLAIM_PROBE_RATE", probe_budget.DEFAULT_RATE, probe_budget.MIN_RATE, probe_budget.MAX_RATE),
        wire_port=wire_port,
        wire_interval=_duration(env, "WIRE_INTERVAL", 0.8, 0.1, 10.0),
        wire_peers=wire_settings.parse_peers(env.get("WIRE_PEERS", ""), wire_port),
        wire_key_file=wire_key_file,
        wire_address=wire_settings.parse_address(env.get("WIRE_ADDRESS", "")),
        track_interfaces=parse_track_interfaces(env.get("TRACK_INTERFACES", ""), interface, check_interface),
        boot_concurrency=_int(env, "BOOT_CONCURRENCY", DEFAULT_BOOT_CONCURRENCY, 1, MAX_MAX_VIPS),
        boot_rate=_rate(env, "BOOT_RATE", DEFAULT_BOOT_RATE, 0.1, 1000.0),
    )
