"""The chaos run's faults of issue 15 ("eyes on the wire"), mixed into Chaos:

  etcd-outage  every member SIGKILLed, started again after a while (the LAN up);
  etcd-freeze  every member SIGSTOPped (an etcd that hangs: connections open, no answer), then
               SIGCONT;
  etcd-cut     one host cut from etcd (blackhole routes to every member in its namespace), its
               LAN up, for a while;
  rogue        a foreign machine (tests/lab/faults.py: Rogue) binds one VIP, announces it once
               and takes the client, then leaves after a while (it says nothing when it goes).

Each fault's window goes into the timeline the judge reads (etcd_out, etcd_cut, rogue); a fault
still running when the run ends (an error in the middle) is ended by `end_wire_faults()`.
"""
from __future__ import annotations

import random
import time
from typing import Callable

from tests.lab.etcd_members import Cluster
from tests.lab.faults import EtcdCut, EtcdOutage, Rogue
from tests.lab.lab import Host, Lab

from .judge import Timeline, Window


class WireFaults:
    """Mixed into Chaos: needs `lab`, `rng`, `cluster`, `timeline`, `note()`, `pause()`,
    `up_hosts()` and `vips()`."""

    lab: Lab
    rng: random.Random
    cluster: Cluster
    timeline: Timeline
    note: Callable[[str], None]
    pause: Callable[[float], None]
    up_hosts: Callable[[], list[Host]]
    vips: Callable[[], list[str]]

    def init_wire_faults(self) -> None:
        self.running_faults: list[EtcdOutage | EtcdCut] = []
        self.rogue = Rogue(self.lab)  # its namespace is made on its first claim

    def _etcd_out(self, how: str, kind: str) -> None:
        outage = EtcdOutage(self.cluster.members, how)
        window = Window(time.monotonic())
        self.timeline.etcd_out.append(window)
        self.running_faults.append(outage)
        outage.begin()
        self.note(f"{kind}: all members {'SIGSTOPped' if how == 'freeze' else 'killed'}, the LAN up")
        self.pause(self.rng.uniform(2.0, 6.0))
        outage.end()  # returns once every member answers /health
        self.running_faults.remove(outage)
        window.end = time.monotonic()
        self.note(f"{kind}: all members back")

    def fault_etcd_outage(self) -> None:
        self._etcd_out("kill", "etcd-outage")

    def fault_etcd_freeze(self) -> None:
        self._etcd_out("freeze", "etcd-freeze")

    def fault_etcd_cut(self) -> None:
        host = self.rng.choice(self.up_hosts())
        cut = EtcdCut(host, [m.ip for m in self.cluster.members])
        window = Window(time.monotonic())
        self.timeline.etcd_cut.setdefault(host.name, []).append(window)
        self.running_faults.append(cut)
        cut.begin()
        held = [v for v in self.vips() if host.has(v)]
        self.note(f"etcd-cut: {host.name} cut from etcd, its LAN up (it holds {', '.join(held) or 'nothing'})")
        self.pause(self.rng.uniform(1.0, 5.0))
        cut.end()
        self.running_faults.remove(cut)
        window.end = time.monotonic()
        self.note(f"etcd-cut: {host.name} reaches etcd again")

    def fault_rogue(self) -> None:
        vip = self.rng.choice(self.vips())
        window = Window(time.monotonic())
        self.timeline.rogue.setdefault(vip, []).append(window)
        self.rogue.claim(vip)
        self.note(f"rogue: {self.rogue.mac} binds {vip} and announces it once")
        self.pause(self.rng.uniform(1.0, 5.0))
        self.rogue.leave(vip)
        window.end = time.monotonic()
        self.note(f"rogue: {self.rogue.mac} left {vip}")

    def end_wire_faults(self) -> None:
        """End whatever is still running (an error in the middle of a fault): thaw or restart
        etcd, take the blackhole routes away, the rogue's addresses off."""
        for fault in reversed(self.running_faults):
            fault.end()
            self.note(f"restore: {type(fault).__name__} ended")
        self.running_faults.clear()
        self.rogue.leave_all()
        now = time.monotonic()
        for windows in [*self.timeline.etcd_cut.values(), *self.timeline.rogue.values()]:
            for w in windows:
                w.end = w.end or now
