"""How fast a VIP moves, link against keepalived, in the same lab (three hosts, a client,
a real etcd for link).

Scenarios, each repeated `runs` times for each subject:
  host-death  the holder's link goes down: time until another host (with its link up) has
              the VIP bound; until the client's neighbour table points at the new holder
              (sampled); until the client's capture saw the new holder's first gratuitous
              ARP (pcap timestamps). Also the time with two holders among the hosts whose
              link is up (keepalived's backups can both take over at once).
  rejoin      the old holder's link comes back: time with two holders until it lets go.
  orderly     SIGTERM to the holder's daemon (link: agent; keepalived: it sends priority 0):
              time until another host has it bound, time with no holder, time with two.
  api         link only: POST /ips/<id>/failover on the holder: the same figures.

Every host is sampled every ~2 ms through netlink sockets opened inside the namespaces
(`probe.Probe`); "two holders" counts only runs of two consecutive samples or more (one
sample reads the hosts one after the other, so a clean hand-over can show both once).

This module is driven by `python -m benchmarks.run` (the one entry point);
`python -m benchmarks.failover` runs only this part.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from tests.lab.lab import Lab
from tests.lab.pcap import Capture
from tests.lab.waiting import wait_until

from . import keepalived
from .probe import Probe, addr_of, stats

VIP = "198.51.100.50/32"
SAMPLE_EVERY = 0.002

# link's defaults (README: 2 s lease, 3 announcements 1 s apart), and the shortest lease the
# lab's etcd grants (election timeout 250 ms: 1 s).
LINK_DEFAULT = {"KEEPALIVE_INTERVAL": "2s", "ARP_GRATUITOUS_INTERVAL": "1s", "ARP_GRATUITOUS_COUNT": "3", "LOGGER_LEVEL": "info"}
LINK_TUNED = {**LINK_DEFAULT, "KEEPALIVE_INTERVAL": "1s"}


@dataclass
class Move:
    """What the sampler saw after a fault."""
    bound: float | None = None      # another (up) host has the VIP bound
    neigh: float | None = None      # the client's neighbour entry points at it
    garp: float | None = None       # first announcement from it seen by the client's capture
    none: float = 0.0               # time with no holder (among hosts whose link is up)
    double: float = 0.0             # time with two holders or more (2+ consecutive samples)
    new: str | None = None
    wall_start: float = 0.0


def watch(probe: Probe, lab: Lab, old: str | None, timeout: float, quiet: float,
          want_neigh: bool = True) -> Move:
    """Sample until another host holds the VIP, the client follows it (if `want_neigh`), and
    exactly one host has held it for `quiet` seconds; bounded by `timeout`."""
    move = Move(wall_start=time.time())
    start = last = time.monotonic()
    prev_count = -1
    double_run: list[float] = []
    single_since: float | None = None
    macs = {h.name: h.mac for h in lab.hosts}
    while True:
        now = time.monotonic()
        if now - start > timeout:
            break
        holders = probe.holders([VIP], only_up=True)[VIP]
        n = len(holders)
        if n == 0:
            move.none += now - last if prev_count == 0 else 0.0
        if n >= 2:
            double_run.append(now)
        else:
            if len(double_run) >= 2:
                move.double += double_run[-1] - double_run[0]
            double_run = []
        prev_count = n
        last = now
        others = [h for h in holders if h != old]
        if move.bound is None and others:
            move.bound, move.new = now - start, others[0]
        if move.new is not None and move.neigh is None and want_neigh and probe.neigh_mac(VIP) == macs[move.new]:
            move.neigh = now - start
        if n == 1 and (old is None or holders[0] != old):
            single_since = single_since or now
        else:
            single_since = None
        if (move.bound is not None and (move.neigh is not None or not want_neigh)
                and single_since is not None and now - single_since >= quiet):
            break
        time.sleep(SAMPLE_EVERY)
    if len(double_run) >= 2:
        move.double += double_run[-1] - double_run[0]
    return move


def watch_rejoin(probe: Probe, timeout: float, quiet: float) -> float:
    """After a link comes back: time with two holders or more until one host holds the VIP
    for `quiet` seconds."""
    start = time.monotonic()
    double_run: list[float] = []
    double = 0.0
    single_since = None
    while time.monotonic() - start < timeout:
        now = time.monotonic()
        n = len(probe.holders([VIP], only_up=True)[VIP])
        if n >= 2:
            double_run.append(now)
            single_since = None
        else:
            if len(double_run) >= 2:
                double += double_run[-1] - double_run[0]
            double_run = []
            single_since = single_since or (now if n == 1 else None)
            if single_since is not None and now - single_since >= quiet:
                break
        time.sleep(SAMPLE_EVERY)
    if len(double_run) >= 2:
        double += double_run[-1] - double_run[0]
    return double


@contextlib.contextmanager
def in_background(action: Callable[[], None], timeout: float = 30.0) -> Iterator[None]:
    """Run `action` on a thread during the body; raise what it raised once both are done."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller below
            errors.append(exc)

    thread = threading.Thread(target=run, name="bench-action", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the action did not end within {timeout:g}s")
    if errors:
        raise errors[0]


def client_learns(lab: Lab, probe: Probe, holder: str, timeout: float = 10.0) -> None:
    """The client's neighbour entry points at the holder (a ping makes one if it has none)."""
    mac = lab.host(holder).mac
    if probe.neigh_mac(VIP) != mac:
        wait_until(lambda: probe.neigh_mac(VIP) == mac or lab.client_ping(VIP), timeout, 0.1, "a client entry")
        wait_until(lambda: probe.neigh_mac(VIP) == mac, timeout, 0.05, f"the client entry to point at {holder}")


class Subject:
    """A VIP manager under test: link with some settings, or keepalived with some timers."""
    name = ""
    quiet = 0.5  # a move is over once one host held the VIP this long

    def start(self, lab: Lab) -> None: ...
    def settle(self, lab: Lab, probe: Probe) -> str: ...  # returns the holder, all hosts ready
    def orderly_stop(self, lab: Lab, holder: str) -> None: ...
    def restart(self, lab: Lab, host: str) -> None: ...
    def api_failover(self, lab: Lab, holder: str) -> Callable[[], None] | None: return None  # the request to make
    def stop(self, lab: Lab) -> None: ...
    def describe(self) -> dict: return {}


class LinkSubject(Subject):
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env = name, env
        self.ids: dict[str, str] = {}

    def describe(self) -> dict:
        return {"system": "link", "env": self.env}

    def start(self, lab: Lab) -> None:
        lab.start_agents(**self.env)
        self.ids = lab.add_vip(VIP)

    def settle(self, lab: Lab, probe: Probe) -> str:
        holder = lab.wait_agreement(VIP, self.ids, timeout=30)
        client_learns(lab, probe, holder)
        return holder

    def orderly_stop(self, lab: Lab, holder: str) -> None:
        os.kill(lab.host(holder).agent.pid, signal.SIGTERM)  # timed from the signal, not the exit

    def restart(self, lab: Lab, host: str) -> None:
        h = lab.host(host)
        h.agent.stop()
        h.start_agent(**self.env).wait_ready(30)

    def api_failover(self, lab: Lab, holder: str) -> Callable[[], None] | None:
        def request() -> None:
            resp = lab.host(holder).api("POST", f"/ips/{self.ids[holder]}/failover")
            if resp.status != 204:
                raise RuntimeError(f"POST /ips/<id>/failover on {holder}: {resp}")
        return request

    def stop(self, lab: Lab) -> None:
        for h in lab.hosts:
            if h.agent is not None:
                h.agent.stop()


class KeepalivedSubject(Subject):
    def __init__(self, timers: keepalived.Timers) -> None:
        self.timers = timers
        self.name = timers.name
        self.quiet = max(0.5, 2.5 * timers.advert_int)  # its backups may both take over, then one yields
        self.group: keepalived.KeepalivedGroup | None = None

    def describe(self) -> dict:
        return {"system": "keepalived", "version": keepalived.version(), "advert_int": self.timers.advert_int,
                "vrrp_version": self.timers.version, "priority": keepalived.PRIORITY, "nopreempt": True,
                "unicast": True, "takeover_estimate": self.timers.takeover_estimate}

    def start(self, lab: Lab) -> None:
        self.group = keepalived.KeepalivedGroup(lab, VIP, self.timers).start()

    def settle(self, lab: Lab, probe: Probe) -> str:
        assert self.group is not None
        for d in self.group.daemons.values():
            if not d.running():
                raise RuntimeError(f"keepalived on {d.host.name} exited: see {d.log_path}")

        def one() -> str | None:
            holders = probe.holders([VIP], only_up=True)[VIP]
            return holders[0] if len(holders) == 1 else None

        # One holder for a while (its backups may still be deciding right after a start).
        holder = wait_until(one, 30, 0.05, "one keepalived holder")
        deadline = time.monotonic() + 30
        stable_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - stable_since < self.quiet:
            now_holder = one()
            if now_holder != holder:
                holder, stable_since = wait_until(one, 30, 0.05, "one keepalived holder"), time.monotonic()
            time.sleep(0.02)
        client_learns(lab, probe, holder)
        return holder

    def orderly_stop(self, lab: Lab, holder: str) -> None:
        assert self.group is not None
        os.kill(self.group.daemons[holder].pid, signal.SIGTERM)

    def restart(self, lab: Lab, host: str) -> None:
        assert self.group is not None
        d = self.group.daemons[host]
        d.stop()
        d.start()

    def stop(self, lab: Lab) -> None:
        if self.group is not None:
            self.group.stop()


@dataclass
class SubjectResult:
    name: str
    setup: dict
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, scenario: str, key: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(scenario, {}).setdefault(key, []).append(value)

    def summary(self) -> dict:
        return {sc: {k: stats(v) for k, v in figures.items()} for sc, figures in self.samples.items()}


def run_subject(subject: Subject, runs: int, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> SubjectResult:
    """A fresh lab, the subject started in it, `runs` repetitions of each scenario."""
    result = SubjectResult(subject.name, subject.describe())
    with Lab(hosts=3, agent_env={}) as lab:
        result.setup["workdir"] = str(lab.workdir)
        subject.start(lab)
        probe = Probe(lab)
        capture: Capture = lab.capture("client-arp")
        garps: list[tuple[str, float, str]] = []  # (scenario, wall time of the fault, new holder's MAC)
        try:
            for run in range(runs):
                try:
                    # host death: the holder's link goes down
                    holder = subject.settle(lab, probe)
                    lab.host(holder).link_down()
                    move = watch(probe, lab, holder, 30, subject.quiet)
                    _record(result, "host-death", move, garps, lab)
                    # rejoin: its link comes back
                    lab.host(holder).link_up()
                    result.add("rejoin", "double", watch_rejoin(probe, 30, max(subject.quiet, 3.0)))
                    # orderly: SIGTERM to the holder's daemon
                    holder = subject.settle(lab, probe)
                    subject.orderly_stop(lab, holder)
                    move = watch(probe, lab, holder, 30, subject.quiet)
                    _record(result, "orderly", move, garps, lab)
                    subject.restart(lab, holder)
                    # api: link's POST /ips/<id>/failover
                    holder = subject.settle(lab, probe)
                    request = subject.api_failover(lab, holder)
                    if request is not None:
                        # Sampled while the request is under way: the hand-over is done before it answers.
                        with in_background(request):
                            move = watch(probe, lab, holder, 30, subject.quiet)
                        _record(result, "api", move, garps, lab)
                    log(f"{subject.name}: run {run + 1}/{runs} done")
                except Exception as exc:  # noqa: BLE001 - recorded, the next run starts from a settle
                    result.errors.append(f"run {run + 1}: {type(exc).__name__}: {exc}")
                    log(f"{subject.name}: run {run + 1} failed: {exc}")
                    for h in lab.hosts:
                        if not probe.link_up(h.ns):
                            h.link_up()
                    if len(result.errors) > max(3, runs // 4):
                        log(f"{subject.name}: too many failures, giving up on this subject")
                        break
        finally:
            capture.stop()
            _garp_times(result, capture, garps)
            probe.close()
            subject.stop(lab)
    return result


def _record(result: SubjectResult, scenario: str, move: Move, garps: list, lab: Lab) -> None:
    if move.bound is None:
        raise RuntimeError(f"{scenario}: no other host bound {VIP} within the time limit")
    for key in ("bound", "neigh"):
        result.add(scenario, key, getattr(move, key))
    result.add(scenario, "none", move.none)
    result.add(scenario, "double", move.double)
    if move.new is not None:
        garps.append((scenario, move.wall_start, lab.host(move.new).mac))


def _garp_times(result: SubjectResult, capture: Capture, garps: list) -> None:
    """From the client's capture: first announcement of the VIP by the new holder after each
    fault (pcap timestamps against the wall clock at the fault)."""
    try:
        packets = capture.announcements(addr_of(VIP))
    except Exception as exc:  # noqa: BLE001 - a broken capture only loses this figure
        result.errors.append(f"capture: {exc}")
        return
    for scenario, t0, mac in garps:
        first = next((p.time for p in packets if p.src_mac == mac and p.time >= t0), None)
        result.add(scenario, "garp", None if first is None else first - t0)


def subjects(names: list[str] | None = None) -> list[Subject]:
    every: list[Subject] = [
        LinkSubject("link lease 2 s (default)", LINK_DEFAULT),
        LinkSubject("link lease 1 s (tuned)", LINK_TUNED),
    ]
    if keepalived.available() is None:
        every += [KeepalivedSubject(keepalived.DEFAULT), KeepalivedSubject(keepalived.TUNED)]
    return [s for s in every if names is None or any(n in s.name for n in names)]


def run(runs: int, names: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"vip": VIP, "runs": runs, "subjects": {}}
    if keepalived.available() is not None:
        out["keepalived"] = keepalived.available()
    for subject in subjects(names):
        res = run_subject(subject, runs)
        out["subjects"][subject.name] = {"setup": res.setup, "summary": res.summary(), "samples": res.samples,
                                         "errors": res.errors}
    return out


if __name__ == "__main__":
    from .run import main
    sys.exit(main(["--only", "failover", *sys.argv[1:]]))
