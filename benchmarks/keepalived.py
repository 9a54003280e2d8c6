"""keepalived (Debian's 2.2.7) in the lab, as the reference: one daemon per host namespace,
VRRP unicast between the hosts' lab addresses, the VIP on eth1.

Each daemon runs in the foreground (`-n`) inside its namespace (`ip netns exec`, which
execs, so the PID we keep is keepalived's own), VRRP only (`-P`), logging to its console
(`-l -D`, into `<workdir>/<host>.keepalived.log`), with pid files in the lab's work
directory. It is stopped by PID: SIGTERM (keepalived then sends an advertisement with
priority 0, so a backup takes over at once) and SIGKILL if it lingers; the VRRP child dies
with its parent. Nothing runs in the machine's own namespace.

Every host is BACKUP with the same priority and `nopreempt`, as link's hosts are equal by
default: a host that comes back does not take the VIP back.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.lab import procs
from tests.lab.lab import IFACE, Host, Lab

BINARY = "/usr/sbin/keepalived"
PRIORITY = 100


@dataclass(frozen=True)
class Timers:
    """`advert_int` (seconds) and the VRRP version it needs: VRRPv2 takes whole seconds only
    (keepalived rounds 0.5 up to 1 and says so), VRRPv3 takes centiseconds, 0.01 s at least
    (keepalived 2.2.7 refuses 0.001: "outside range [0.010000, 255.000000]")."""
    name: str
    advert_int: float
    version: int

    @property
    def takeover_estimate(self) -> float:
        """RFC 5798: Master_Down_Interval = 3 × advert + skew, skew = (256 − prio) / 256 × advert."""
        return 3 * self.advert_int + (256 - PRIORITY) / 256 * self.advert_int


DEFAULT = Timers("keepalived advert_int 1 s (default)", 1.0, 2)
TUNED = Timers("keepalived advert_int 0.1 s (VRRPv3)", 0.1, 3)
MINIMUM = Timers("keepalived advert_int 0.01 s (VRRPv3, smallest accepted)", 0.01, 3)


def available() -> str | None:
    """None when keepalived can be run, else why not."""
    if not os.path.exists(BINARY) and not shutil.which("keepalived"):
        return "keepalived is not installed (apt-get install -y keepalived)"
    return None


def version() -> str:
    done = subprocess.run([BINARY, "--version"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).splitlines()[0].strip() if (done.stderr or done.stdout) else "?"


def config(host: Host, peers: list[str], vip: str, timers: Timers, router_id: int = 51) -> str:
    peer_lines = "\n".join(f"    {p}" for p in peers)
    return f"""# written by benchmarks/keepalived.py for {host.name}
global_defs {{
  router_id {host.name}
  vrrp_version {timers.version}
  script_user root
}}

vrrp_instance VI_{router_id} {{
  state BACKUP
  nopreempt
  interface {IFACE}
  virtual_router_id {router_id}
  priority {PRIORITY}
  advert_int {timers.advert_int:g}
  unicast_src_ip {host.ip}
  unicast_peer {{
{peer_lines}
  }}
  virtual_ipaddress {{
    {vip} dev {IFACE}
  }}
}}
"""


class Keepalived:
    """One keepalived daemon in a host namespace."""

    def __init__(self, lab: Lab, host: Host, vip: str, timers: Timers) -> None:
        self.lab, self.host, self.vip, self.timers = lab, host, vip, timers
        base = lab.workdir / f"{host.name}.keepalived"
        self.conf = Path(f"{base}.conf")
        self.log_path = Path(f"{base}.log")
        self.pidfiles = [Path(f"{base}.{what}.pid") for what in ("main", "vrrp", "checkers")]
        peers = [h.ip for h in lab.hosts if h is not host]
        self.conf.write_text(config(host, peers, vip, timers))
        self.proc: subprocess.Popen | None = None
        self.known: set[int] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "Keepalived":
        for path in self.pidfiles:  # a stale pid file makes keepalived think it runs already
            path.unlink(missing_ok=True)
        argv = ["ip", "netns", "exec", self.host.ns, BINARY, "-n", "-l", "-D", "-G", "-P",
                "-f", str(self.conf), "-p", str(self.pidfiles[0]), "-r", str(self.pidfiles[1]),
                "-c", str(self.pidfiles[2])]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== bench: starting keepalived on {self.host.name} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                                         start_new_session=True)
        self.known = {self.proc.pid}
        return self

    def children(self) -> list[int]:
        if not self.running():
            return []
        kids = procs.descendants(self.pid)
        self.known.update(kids)
        return kids

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (priority 0 sent, VIP removed), wait, SIGKILL what is left (by PID)."""
        if self.proc is None:
            return
        self.children()
        procs.sigterm_and_wait(self.proc, timeout)
        left = [p for p in self.known if procs.alive(p)]
        if left:
            procs.kill(left)
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


class KeepalivedGroup:
    """keepalived on every host of the lab, for one VIP."""

    def __init__(self, lab: Lab, vip: str, timers: Timers) -> None:
        self.lab, self.vip, self.timers = lab, vip, timers
        self.daemons = {h.name: Keepalived(lab, h, vip, timers) for h in lab.hosts}

    def start(self) -> "KeepalivedGroup":
        for d in self.daemons.values():
            d.start()
        return self

    def stop(self) -> None:
        for d in self.daemons.values():
            d.stop()

    def __enter__(self) -> "KeepalivedGroup":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
