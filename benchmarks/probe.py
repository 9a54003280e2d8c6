"""Cheap looks at the lab from the benchmark process: raw netlink sockets opened inside each
namespace (tens of microseconds a look, no subprocess), etcd's Prometheus metrics, psutil
numbers of a process tree, and small statistics helpers.
"""
from __future__ import annotations

import ipaddress
import math
import re
import statistics
from typing import Iterable

import psutil

from tests.lab import http
from tests.lab.addrdump import AddressDump
from tests.lab.lab import BRIDGE_IP, ETCD_CLIENT_PORT, IFACE, Lab


def addr_of(vip: str) -> str:
    return vip.split("/")[0]


class Probe:
    """One raw netlink socket per host namespace (and the client's): which host has which
    address on eth1, whether eth1 is up, and the client's neighbour table. Cheap enough to
    sample every few ms without loading the machine the agents run on (tests/lab/addrdump)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dumps: dict[str, AddressDump] = {}
        try:
            for ns in [h.ns for h in lab.hosts] + [lab.client_ns]:
                self.dumps[ns] = AddressDump(ns, IFACE)
        except BaseException:
            self.close()
            raise

    def addresses(self, ns: str) -> set[str]:
        """Every address (without prefix length) on the namespace's eth1, IPv4 and IPv6."""
        return self.dumps[ns].addresses()

    def link_up(self, ns: str) -> bool:
        return self.dumps[ns].link_up()

    def bound(self, vip: str) -> list[str]:
        """Names of the hosts that have `vip` on eth1 (whatever the link's state)."""
        return self.holders([vip])[vip]

    def holders(self, vips: Iterable[str], only_up: bool = False) -> dict[str, list[str]]:
        """{vip: [host names that have it bound]} with one netlink dump per host."""
        want = {ipaddress.ip_interface(v).ip.packed: v for v in vips}
        out: dict[str, list[str]] = {v: [] for v in want.values()}
        for h in self.lab.hosts:
            dump = self.dumps[h.ns]
            if only_up and not dump.link_up():
                continue
            for raw in dump.packed() & want.keys():
                out[want[raw]].append(h.name)
        return out

    def neigh_mac(self, vip: str) -> str | None:
        """The client's neighbour entry (MAC) for the VIP, if it has a link-layer address."""
        return self.dumps[self.lab.client_ns].neighbours().get(addr_of(vip))

    def close(self) -> None:
        for dump in self.dumps.values():
            try:
                dump.close()
            except Exception:  # noqa: BLE001 - closing at the end
                pass
        self.dumps.clear()


# ---------------------------------------------------------------- etcd's own metrics
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


def etcd_metrics(lab: Lab, host: str = BRIDGE_IP, port: int = ETCD_CLIENT_PORT) -> list[tuple[str, dict[str, str], float]]:
    """etcd's /metrics, fetched from inside the bridge namespace."""
    resp = http.request(lab.bridge_ns, host, port, "GET", "/metrics", timeout=5.0)
    if resp.status != 200 or not isinstance(resp.body, str):
        raise RuntimeError(f"etcd /metrics answered {resp.status}")
    return parse_prometheus(resp.body)


def grpc_counts(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, dict[str, float]]:
    """{"handled": {method: n}, "received": {method: n}} from grpc_server_* counters."""
    handled: dict[str, float] = {}
    received: dict[str, float] = {}
    for name, labels, value in samples:
        method = labels.get("grpc_method", "?")
        if name == "grpc_server_handled_total":
            handled[method] = handled.get(method, 0.0) + value
        elif name == "grpc_server_msg_received_total":
            received[method] = received.get(method, 0.0) + value
    return {"handled": handled, "received": received}


def histogram_mean(samples: list[tuple[str, dict[str, str], float]], base: str) -> float | None:
    """Mean of a Prometheus histogram (its _sum over its _count), None when empty."""
    total = sum(v for n, _, v in samples if n == base + "_sum")
    count = sum(v for n, _, v in samples if n == base + "_count")
    return total / count if count else None


def counter(samples: list[tuple[str, dict[str, str], float]], name: str) -> float:
    return sum(v for n, _, v in samples if n == name)


# ---------------------------------------------------------------- processes
def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def role(proc: psutil.Process) -> str:
    """supervisor, api, worker (from the process title), or other."""
    try:
        title = " ".join(p for p in proc.cmdline() if p)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "gone"
    if title.startswith("link: vip "):
        return "worker"
    if title.startswith("link: api"):
        return "api"
    if title.startswith("link: supervisor"):
        return "supervisor"
    return "other"


def cpu_seconds(procs: Iterable[psutil.Process]) -> dict[int, float]:
    """user + system CPU seconds of each live process, by PID."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return out


# ---------------------------------------------------------------- statistics
def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def stats(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "median": statistics.median(values), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values), "min": min(values)}
