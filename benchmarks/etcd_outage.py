"""etcd outage: what link's fault policies (activate, keep, arbitrate) and keepalived do to a
VIP and to its clients when etcd goes away (issue 15).

Scenarios, each repeated `runs` times per subject in one lab per subject (three hosts, a
client, the lab's one-member etcd; tests/lab/faults.py makes the faults):
  etcd-down    etcd SIGKILLed for `outage` seconds, every host up, then started again;
  holder-dies  etcd killed; a third of the way into the outage the holder dies (its link
               down, its agent or daemon SIGKILLed); etcd back after `outage`; the dead host
               comes back afterwards (without the VIP, as after a reboot);
  host-cut     the holder alone cut from etcd (a blackhole route in its namespace; its LAN up)
               for `outage` seconds.
Measured from the fault to `after` seconds past its end, sampling every host and the client
every few ms (benchmarks/probe.py): time with two holders or more (among hosts whose link is
up; runs of two samples or more), time with none, time the client's neighbour entry pointed
elsewhere than at a live holder, and the client's reachability: a TCP SYN to the VIP's port 9
every 100 ms from the client namespace (an RST back means a host holding the VIP answered),
as the share of probes answered and the longest stretch without an answer. holder-dies also
gives the time from the death until another host had the VIP bound.

keepalived (VRRP unicast, advert_int 1 s, the failover benchmark's setup) does not use etcd:
etcd-down and host-cut leave it alone, holder-dies is its plain failover. It is the reference
for what hosts deciding over the LAN alone give.

    .venv/bin/python -m benchmarks.etcd_outage [--runs 3] [--subjects arbitrate,keepalived]
                   # --subjects: the other subjects already in the output file are kept
    .venv/bin/python -m benchmarks.etcd_outage --smoke --output /tmp/x.json   # is it well formed

Writes benchmarks/results/etcd_outage.json, its plot (etcd_outage.png) and, for a full run to
the default output, BENCHMARKS.md's `etcd_outage` block (benchmarks/etcd_outage_report.py).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.lab import netns, procs
from tests.lab.faults import EtcdCut, EtcdOutage, etcd_address, lab_etcd
from tests.lab.lab import Lab

from . import keepalived, runtime
from .failover import VIP, KeepalivedSubject, LinkSubject, SubjectResult
from .probe import Probe, addr_of

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "results" / "etcd_outage.json"
SCENARIOS = ("etcd-down", "holder-dies", "host-cut")
POLICIES = ("activate", "keep", "arbitrate")
SAMPLE_EVERY = 0.004
PROBE_EVERY = 0.1


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- subjects
class OutageLink(LinkSubject):
    """link with its defaults (2 s lease) and one FAULT_POLICY."""

    def __init__(self, policy: str) -> None:
        super().__init__(f"link {policy}", {"FAULT_POLICY": policy, "LOGGER_LEVEL": "info"})

    def kill_host(self, lab: Lab, name: str) -> None:
        lab.host(name).link_down()
        lab.host(name).agent.kill()

    def revive_host(self, lab: Lab, name: str) -> None:
        host = lab.host(name)
        if host.has(VIP):
            host.del_addr(VIP)
        host.link_up()
        host.start_agent(**self.env).wait_ready(30)


class OutageKeepalived(KeepalivedSubject):
    def __init__(self) -> None:
        super().__init__(keepalived.DEFAULT)
        self.name = "keepalived (VRRP, advert 1 s)"

    def kill_host(self, lab: Lab, name: str) -> None:
        assert self.group is not None
        lab.host(name).link_down()
        daemon = self.group.daemons[name]
        procs.kill([daemon.pid, *daemon.children()])

    def revive_host(self, lab: Lab, name: str) -> None:
        assert self.group is not None
        host = lab.host(name)
        if host.has(VIP):
            host.del_addr(VIP)
        host.link_up()
        self.group.daemons[name].stop()
        self.group.daemons[name].start()


OutageSubject = OutageLink | OutageKeepalived


def subjects(names: list[str] | None = None) -> list[OutageSubject]:
    every: list[OutageSubject] = [OutageLink(p) for p in POLICIES]
    if keepalived.available() is None:
        every.append(OutageKeepalived())
    return [s for s in every if names is None or any(n in s.name for n in names)]


# ---------------------------------------------------------------- looking
class ClientProbes:
    """A TCP SYN to the VIP every PROBE_EVERY s from the client namespace, on a thread of its
    own: (time, answered) each. Bounded by `limit` seconds."""

    def __init__(self, lab: Lab, limit: float) -> None:
        self.lab, self.limit = lab, limit
        self.results: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-client-probes", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            t = time.monotonic()
            sock = netns.socket_in(self.lab.client_ns, socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(PROBE_EVERY * 3)
                code = sock.connect_ex((addr_of(VIP), 9))
            except OSError as exc:
                code = exc.errno or -1
            finally:
                sock.close()
            self.results.append((t, code in (0, errno.ECONNREFUSED)))
            self._stop.wait(max(0.0, t + PROBE_EVERY - time.monotonic()))

    def __enter__(self) -> "ClientProbes":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Samples:
    """What the sampler saw: (time, holders, client's MAC or None)."""
    points: list[tuple[float, tuple[str, ...], str | None]] = field(default_factory=list)

    def watch(self, lab: Lab, probe: Probe, seconds: float, stop_early: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + seconds
        n = 0
        mac = probe.neigh_mac(VIP)
        while time.monotonic() < deadline:
            holders = tuple(probe.holders([VIP], only_up=True)[VIP])
            if n % 4 == 0:
                mac = probe.neigh_mac(VIP)
            self.points.append((time.monotonic(), holders, mac))
            n += 1
            if stop_early is not None and stop_early():
                break
            time.sleep(SAMPLE_EVERY)


def figures(samples: Samples, probes: list[tuple[float, bool]], macs: dict[str, str], start: float, ended: float,
            death: float | None, old: str) -> dict[str, Any]:
    """The scenario's figures from its samples (all from `start`, the fault; `none_after`:
    the time with no holder once the fault `ended`)."""
    pts = [p for p in samples.points if p[0] >= start]
    double = none = none_after = elsewhere = 0.0
    run_double: list[float] = []
    bound_elsewhere: float | None = None
    for (t, holders, mac), nxt in zip(pts, pts[1:] + [None]):
        dt = (nxt[0] - t) if nxt else 0.0
        if len(holders) >= 2:
            run_double.append(t)
        else:
            double += run_double[-1] - run_double[0] if len(run_double) >= 2 else 0.0
            run_double = []
        if not holders:
            none += dt
            none_after += dt if t >= ended else 0.0
        elif mac is not None and mac not in {macs[h] for h in holders}:
            elsewhere += dt
        if death is not None and bound_elsewhere is None and t >= death and any(h != old for h in holders):
            bound_elsewhere = t - death
    if len(run_double) >= 2:
        double += run_double[-1] - run_double[0]
    mine = [(t, ok) for t, ok in probes if t >= start]
    longest, since = 0.0, None
    for t, ok in mine:
        if not ok and since is None:
            since = t
        elif ok and since is not None:
            longest, since = max(longest, t - since), None
    if since is not None and mine:
        longest = max(longest, mine[-1][0] - since + PROBE_EVERY)
    out: dict[str, Any] = {"double": double, "none": none, "none_after": none_after, "client_elsewhere": elsewhere,
                           "answered_pct": 100.0 * sum(ok for _, ok in mine) / len(mine) if mine else None,
                           "unanswered_longest": longest}
    if death is not None:
        out["bound_elsewhere"] = bound_elsewhere
    return out


# ---------------------------------------------------------------- the scenarios
def scenario(lab: Lab, probe: Probe, subject: OutageSubject, kind: str, outage: float, after: float) -> dict[str, Any]:
    holder = subject.settle(lab, probe)
    macs = {h.name: h.mac for h in lab.hosts}
    samples = Samples()
    death: float | None = None
    with ClientProbes(lab, outage + after + 30) as probes:
        samples.watch(lab, probe, 0.5)  # a look before the fault
        start = time.monotonic()
        if kind == "host-cut":
            with EtcdCut(lab.host(holder), [etcd_address(lab.etcd)]):
                samples.watch(lab, probe, outage)
        else:
            with EtcdOutage(lab_etcd(lab), "kill"):
                if kind == "holder-dies":
                    samples.watch(lab, probe, outage / 3)
                    death = time.monotonic()
                    subject.kill_host(lab, holder)
                    samples.watch(lab, probe, outage - (time.monotonic() - start))
                else:
                    samples.watch(lab, probe, outage)
        ended = time.monotonic()  # etcd answers again (or the route is gone)
        samples.watch(lab, probe, after)
        taken = list(probes.results)
    result = figures(samples, taken, macs, start, ended, death, holder)
    result["holder"] = holder
    if kind == "holder-dies":
        subject.revive_host(lab, holder)
    return result


class OutageResult(SubjectResult):
    def add_figures(self, kind: str, figs: dict[str, Any]) -> None:
        for key, value in figs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.add(kind, key, float(value))
            elif value is None and key == "bound_elsewhere":
                self.add(kind, "never_bound_elsewhere", 1.0)


def run_subject(subject: OutageSubject, runs: int, scenarios: tuple[str, ...], outage: float, after: float) -> OutageResult:
    result = OutageResult(subject.name, {**subject.describe(), "outage_s": outage, "after_s": after})
    with Lab(hosts=3, agent_env={}) as lab:
        subject.start(lab)
        probe = Probe(lab)
        try:
            for run in range(runs):
                for kind in scenarios:
                    try:
                        result.add_figures(kind, scenario(lab, probe, subject, kind, outage, after))
                    except Exception as exc:  # noqa: BLE001 - recorded; the next scenario settles first
                        result.errors.append(f"run {run + 1} {kind}: {type(exc).__name__}: {exc}")
                        log(f"{subject.name}: run {run + 1} {kind} failed: {exc}")
                        _restore(lab)
                log(f"{subject.name}: run {run + 1}/{runs} done")
        finally:
            probe.close()
            subject.stop(lab)
    return result


def _restore(lab: Lab) -> None:
    """After a failed scenario: etcd running, every link up (a subject's settle() does the rest)."""
    if lab.etcd.proc is None or lab.etcd.proc.poll() is not None:
        lab.etcd.start()
    for h in lab.hosts:
        netns.ip(h.ns, "link", "set", "eth1", "up")
        netns.ip(h.ns, "route", "del", "blackhole", f"{etcd_address(lab.etcd)}/32", check=False)


def run(runs: int, names: list[str] | None, scenarios: tuple[str, ...], outage: float, after: float) -> dict[str, Any]:
    out: dict[str, Any] = {"vip": VIP, "runs": runs, "outage_s": outage, "after_s": after, "subjects": {}}
    if keepalived.available() is not None:
        out["keepalived"] = keepalived.available()
    for subject in subjects(names):
        log(f"--- {subject.name}")
        res = run_subject(subject, runs, scenarios, outage, after)
        out["subjects"][subject.name] = {"setup": res.setup, "samples": res.samples, "errors": res.errors,
                                         "summary": res.summary()}
    return out


def main(argv: list[str] | None = None) -> int:
    from .etcd_outage_report import publish
    from .run import environment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subjects", help="comma-separated parts of subject names (e.g. 'arbitrate,keepalived')")
    parser.add_argument("--scenarios", help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds etcd stays out (or the host cut)")
    parser.add_argument("--after", type=float, default=6.0, help="seconds measured after the fault ends")
    parser.add_argument("--smoke", action="store_true", help="one run of etcd-down, link activate, short outage")
    parser.add_argument("--agents", choices=runtime.RUNTIMES, default="debian")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--document", type=Path, default=None,
                        help="markdown file whose etcd_outage block is rewritten (default: BENCHMARKS.md for a full "
                             "run to the default output)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.exit(2, "benchmarks.etcd_outage: needs root (it builds network namespaces)\n")
    names = [s.strip() for s in args.subjects.split(",")] if args.subjects else None
    scenarios = tuple(s.strip() for s in args.scenarios.split(",")) if args.scenarios else SCENARIOS
    if args.smoke:
        args.runs, names, scenarios, args.outage, args.after = 1, names or ["activate"], ("etcd-down",), 3.0, 2.0
    if not set(scenarios) <= set(SCENARIOS):
        parser.exit(2, f"benchmarks.etcd_outage: --scenarios: one of {', '.join(SCENARIOS)}\n")
    started = time.monotonic()
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": args.smoke,
                               "environment": environment(), "agents": args.agents}
    with runtime.agents_on(args.agents):
        results["outage"] = run(args.runs, names, scenarios, args.outage, args.after)
    for sub in results["outage"]["subjects"].values():
        sub["setup"]["measured"] = {"when": results["when"], "git": results["environment"].get("git")}
    results["duration_s"] = round(time.monotonic() - started, 1)
    if names and not args.smoke and args.output.exists():  # a re-run of some subjects keeps the others
        try:
            earlier = json.loads(args.output.read_text())
        except ValueError:
            earlier = {}
        kept = {k: v for k, v in earlier.get("outage", {}).get("subjects", {}).items()
                if k not in results["outage"]["subjects"]}
        results["outage"]["subjects"] = {**kept, **results["outage"]["subjects"]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1, default=str) + "\n")
    document = args.document or (REPO / "BENCHMARKS.md" if args.output == OUTPUT and not args.smoke else None)
    publish(results, args.output, document, log)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind: the labs clean up
    sys.exit(main())
