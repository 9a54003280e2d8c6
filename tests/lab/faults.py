"""Faults of issue 15 for the lab: etcd frozen or killed (the LAN up), one host cut from etcd
(the LAN up), and a rogue claimant (another machine on the LAN that binds a VIP and announces
it). Used by lab tests, the chaos run and the benchmarks.

Each fault has `begin()` and `end()` and is a context manager whose exit ends it, also when
the body fails. Nothing here starts a process of its own: etcd's processes are the lab's (kept
by PID in `Etcd.proc` / `Member.proc`), signalled by PID; routes and addresses live inside lab
namespaces, which the lab deletes at close.
"""
from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import subprocess
import time
from typing import Protocol, Sequence

from . import http, netns, procs
from .lab import BRIDGE_IP, ETCD_CLIENT_PORT, IFACE, SUBNET, SUBNET6, Host, Lab
from .waiting import GiveUp, wait_until

logger = logging.getLogger(__name__)

ROGUE_IP = f"{SUBNET}.200"
ROGUE_IP6 = f"{SUBNET6}200"
ROGUE_MAC = "02:00:00:00:03:01"


class EtcdProcess(Protocol):
    """What the lab's one etcd (`lab.Etcd`) and a cluster member (`etcd_members.Member`) share."""
    ns: str
    proc: subprocess.Popen | None

    def start(self) -> None: ...


def etcd_address(member: EtcdProcess) -> str:
    """The address a member serves clients on (the lab's own etcd: the bridge's address)."""
    return str(getattr(member, "ip", BRIDGE_IP))


def etcd_healthy(member: EtcdProcess) -> bool:
    """etcd's own /health from inside the bridge namespace (no etcdctl process per look)."""
    if member.proc is None or member.proc.poll() is not None:
        raise GiveUp(f"etcd {etcd_address(member)} is not running (exit {member.proc and member.proc.returncode})")
    resp = http.request(member.ns, etcd_address(member), ETCD_CLIENT_PORT, "GET", "/health", timeout=1.0)
    return resp.status == 200 and isinstance(resp.body, dict) and resp.body.get("health") == "true"


class EtcdOutage:
    """Every member out at once, the LAN untouched.

    how="freeze": SIGSTOP (an etcd that hangs: connections stay open and nothing answers, as
    an overloaded or stuck etcd); end() sends SIGCONT.
    how="kill": SIGKILL (connections refused); end() starts each member again on its data dir.
    end() returns once every member answers /health (bounded by `timeout`).
    """

    HOWS = ("freeze", "kill")

    def __init__(self, members: Sequence[EtcdProcess], how: str = "kill", timeout: float = 30.0) -> None:
        if how not in self.HOWS:
            raise ValueError(f"how={how!r}: one of {self.HOWS}")
        self.members, self.how, self.timeout = list(members), how, timeout
        self._frozen: list[int] = []
        self.active = False

    def begin(self) -> "EtcdOutage":
        self.active = True
        pids = [m.proc.pid for m in self.members if m.proc is not None and m.proc.poll() is None]
        if self.how == "freeze":
            self._frozen = pids
            procs.signal_pids(pids, signal.SIGSTOP)
        else:
            procs.kill(pids)
            for m in self.members:
                if m.proc is not None:
                    m.proc.wait(5)
        return self

    def end(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.how == "freeze":
            frozen, self._frozen = self._frozen, []
            procs.signal_pids(frozen, signal.SIGCONT)
        else:
            for m in self.members:
                m.start()  # the lab's own Etcd waits for /health itself; a Member does not
        for m in self.members:
            wait_until(lambda m=m: etcd_healthy(m), self.timeout, 0.05, f"etcd {etcd_address(m)} to answer again")

    def __enter__(self) -> "EtcdOutage":
        return self.begin()

    def __exit__(self, *exc: object) -> None:
        self.end()


def lab_etcd(lab: Lab) -> list[EtcdProcess]:
    """The lab's own one-member etcd, as a list of members."""
    return [lab.etcd]


class EtcdCut:
    """One host cut from etcd, its LAN untouched: a blackhole route to each etcd address inside
    the host's namespace (its packets to etcd are dropped, new connections fail at once;
    traffic to its peers and the client flows). end() removes the routes."""

    def __init__(self, host: Host, addresses: Sequence[str]) -> None:
        self.host = host
        self.prefixes = [str(ipaddress.ip_network(a)) for a in addresses]  # 198.51.100.1 -> 198.51.100.1/32
        self.active = False

    def begin(self) -> "EtcdCut":
        self.active = True
        for prefix in self.prefixes:
            netns.ip(self.host.ns, "route", "add", "blackhole", prefix)
        return self

    def end(self) -> None:
        if not self.active:
            return
        self.active = False
        for prefix in self.prefixes:
            # check=False: the namespace may already be gone with its lab
            netns.ip(self.host.ns, "route", "del", "blackhole", prefix, check=False)

    def routes(self) -> list[str]:
        """The blackhole routes in the host's namespace now (for tests and failure messages)."""
        out = netns.ip(self.host.ns, "route", "show", "type", "blackhole", check=False).stdout
        return [line.split()[1] for line in out.splitlines() if line.startswith("blackhole ")]

    def __enter__(self) -> "EtcdCut":
        return self.begin()

    def __exit__(self, *exc: object) -> None:
        self.end()


# ---------------------------------------------------------------- the rogue claimant
def _arp_frames(vip: str, mac: str) -> list[bytes]:
    """A gratuitous ARP request and reply for `vip` from `mac`, as most announcers send."""
    from scapy.layers.l2 import ARP, Ether
    bcast = "ff:ff:ff:ff:ff:ff"
    return [bytes(Ether(dst=bcast, src=mac) / ARP(op=op, hwsrc=mac, psrc=vip, pdst=vip,
                                                  hwdst=mac if op == 2 else "00:00:00:00:00:00"))
            for op in (1, 2)]


def _na_frames(vip: str, mac: str) -> list[bytes]:
    """An unsolicited neighbour advertisement (override set) for `vip` to all nodes."""
    from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
    from scapy.layers.l2 import Ether
    return [bytes(Ether(dst="33:33:00:00:00:01", src=mac) / IPv6(src=vip, dst="ff02::1", hlim=255)
                  / ICMPv6ND_NA(tgt=vip, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=mac))]


class Rogue:
    """Another machine on the lab's LAN that claims VIPs: a hand-configured host, a stale
    keepalived, `link-agent associate` run by mistake. Its own namespace `<prefix>rg` on the
    lab's bridge (MAC 02:00:00:00:03:01, 198.51.100.200, 2001:db8::200), made on first use and
    deleted with the lab. claim() binds the VIP on its eth1 (so its kernel answers ARP and
    neighbour solicitations for it) and announces it; leave() removes the address and says
    nothing more, as a machine that is switched off or unconfigured."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ns = lab.prefix + "rg"
        self.mac = ROGUE_MAC
        self.claimed: set[str] = set()
        self._plugged = False

    def plug(self) -> "Rogue":
        if not self._plugged:
            # The lab's own building steps: the namespace is registered (deleted at close)
            # before it is made.
            self.lab._add_ns(self.ns)
            self.lab._plug(self.ns, "vrg", f"{ROGUE_IP}/24", f"{ROGUE_IP6}/64", self.mac)
            self._plugged = True
        return self

    def claim(self, vip: str, announcements: int = 1, interval: float = 0.2) -> None:
        """Bind `vip` ("198.51.100.50/32" or "2001:db8::50/128") and announce it
        `announcements` times, `interval` apart (bounded: at most 20)."""
        self.plug()
        ip = ipaddress.ip_interface(vip).ip
        extra = ["nodad"] if ip.version == 6 else []
        netns.ip(self.ns, "addr", "replace", vip, "dev", IFACE, *extra)
        self.claimed.add(vip)
        self.announce(vip, announcements, interval)

    def announce(self, vip: str, count: int = 1, interval: float = 0.2) -> None:
        ip = ipaddress.ip_interface(vip).ip
        frames = _arp_frames(str(ip), self.mac) if ip.version == 4 else _na_frames(str(ip), self.mac)
        sock = netns.socket_in(self.ns, socket.AF_PACKET, socket.SOCK_RAW)
        try:
            sock.bind((IFACE, 0))  # the name is looked up in the socket's namespace
            for i in range(max(0, min(count, 20))):
                if i:
                    time.sleep(interval)
                for frame in frames:
                    sock.send(frame)
        finally:
            sock.close()
        logger.info("rogue %s announced %s %d time(s)", self.mac, ip, count)

    def leave(self, vip: str) -> None:
        if vip in self.claimed:
            self.claimed.discard(vip)
            netns.ip(self.ns, "addr", "del", vip, "dev", IFACE, check=False)

    def leave_all(self) -> None:
        for vip in sorted(self.claimed):
            self.leave(vip)
