"""How link scales with the number of VIPs: N VIPs configured on each of 3 hosts (3 × N
worker processes on this one machine), with link's default timers.

For each N:
  converge    time from the first POST /ips until every VIP is bound on exactly one host
              (netlink, every host), and until the three APIs agree (one ACTIVATED, the
              others STANDBY, for every VIP);
  idle        after a warm-up, over a fixed window: CPU seconds of every process of the three
              agents (psutil cpu_times), per worker and per agent, etcd's CPU, etcd requests
              per second (etcd's own grpc_server_handled_total / msg_received_total deltas),
              holder changes seen (should be none), the machine's whole CPU use;
  memory      psutil memory_full_info() of the supervisors, API processes and workers (USS,
              PSS, RSS);
  dead host   the host holding most VIPs loses its link and its agent is frozen and killed:
              time until each of its VIPs is bound on exactly one other host.

When a count does not converge in time, what was reached is recorded with the evidence
(CPU use, load, etcd's latency figures, the agents' warnings) and the bigger counts are still
tried unless --scale-stop-on-failure.
"""
from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any, Callable

import psutil

from tests.lab.lab import Host, Lab, lock_key
from tests.lab.waiting import WaitTimeout, wait_until

from . import runtime
from .measure import MIB, dead_host, evidence, machine_cpu, measure_idle, mem_stats, memory
from .probe import Probe, role, stats, tree

SCALE_ENV = {"KEEPALIVE_INTERVAL": "2s", "ARP_GRATUITOUS_INTERVAL": "1s", "ARP_GRATUITOUS_COUNT": "3",
             "LOGGER_LEVEL": "warn", "MAX_VIPS": "1000"}  # MAX_VIPS: the default (100) is below the levels


def scale_vips(n: int) -> list[str]:
    """n VIPs from the documentation ranges: 203.0.113.1-254, then 198.51.100.128-254 (the
    lab's hosts, client and etcd live below .128), then 2001:db8:ffff::1.. (/128)."""
    out = [f"203.0.113.{i}/32" for i in range(1, 255)] + [f"198.51.100.{i}/32" for i in range(128, 255)]
    out = out[:n]
    out += [f"2001:db8:ffff::{i:x}/128" for i in range(1, n - len(out) + 1)]
    return out


def post_all(host: Host, vips: list[str], out: dict[str, Any], deadline: float) -> None:
    times, errors, ids = [], [], {}
    out[host.name] = {"times": times, "errors": errors, "ids": ids}
    for vip in vips:
        if time.monotonic() > deadline:
            errors.append(f"POST phase over its time limit: {len(ids)} of {len(vips)} VIPs added")
            break
        t = time.perf_counter()
        try:
            resp = host.api("POST", "/ips", {"ip": vip}, timeout=30)
        except Exception as exc:  # noqa: BLE001 - counted
            errors.append(f"{vip}: {exc}")
            continue
        times.append(time.perf_counter() - t)
        if resp.status != 201:
            errors.append(f"{vip}: {resp.status} {resp.body}")
        else:
            ids[vip] = resp.body["id"]


def api_view(lab: Lab, hosts: list[Host]) -> dict[str, dict[str, dict]]:
    """{host: {vip: ip object}} from each agent's GET /ips."""
    view = {}
    for h in hosts:
        resp = h.api("GET", "/ips", timeout=30)
        if resp.status != 200:
            raise RuntimeError(f"GET /ips on {h.name}: {resp.status}")
        view[h.name] = {o["ip"]: o for o in resp.body["ips"]}
    return view


def agreed(view: dict[str, dict[str, dict]], vips: list[str]) -> tuple[int, collections.Counter]:
    """How many VIPs the APIs agree on (one ACTIVATED, the others STANDBY), and the statuses."""
    ok = 0
    statuses: collections.Counter = collections.Counter()
    for vip in vips:
        seen = [view[h].get(vip, {}).get("status") for h in view]
        statuses.update(seen)
        if seen.count("ACTIVATED") == 1 and seen.count("STANDBY") == len(seen) - 1:
            ok += 1
    return ok, statuses


def post_phase(lab: Lab, vips: list[str], limit: float, res: dict[str, Any], log: Callable[[str], None]) -> bool:
    """POST the VIPs to every host (one thread per host), bounded by `limit` seconds."""
    t0 = time.monotonic()
    posted: dict[str, Any] = {}
    threads = [threading.Thread(target=post_all, args=(h, vips, posted, t0 + limit), daemon=True) for h in lab.hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, t0 + limit + 40 - time.monotonic()))
    res["post_s"] = round(time.monotonic() - t0, 2)
    res["post_latency"] = stats([x for p in posted.values() for x in p["times"]])
    res["post_errors"] = {h: p["errors"][:5] for h, p in posted.items() if p["errors"]}
    res["posted"] = {h: len(p["ids"]) for h, p in posted.items()}
    complete = all(res["posted"].get(h.name) == len(vips) for h in lab.hosts)
    log(f"scale {len(vips)}: POSTs to 3 hosts in {res['post_s']} s ({res['posted']})")
    return complete


class Doubles(dict):
    """Samples of the holders while the VIPs are POSTed and converge: a VIP bound on two hosts
    at once is a double (issue 15 point 4: an overloaded host must not keep a VIP that another
    host holds with the lock). A dict, so that it lands in the results JSON as it is."""

    def __init__(self, vips: list[str], lock_of: Callable[[str], str | None] = lambda _vip: None) -> None:
        super().__init__(samples=0, samples_with_a_double=0, most_doubles_at_once=0, vips_ever_doubled=0, first_seen={})
        self.vips = vips
        self.lock_of = lock_of
        self.doubled: set[str] = set()
        self.t0 = time.monotonic()

    def count(self, holders: dict[str, list[str]]) -> int:
        several = [v for v in self.vips if len(holders[v]) > 1]
        now = round(time.monotonic() - self.t0, 1)
        for vip in set(several) - self.doubled:  # when (s after the first POST, wall clock) and where: to read the logs
            self["first_seen"][vip] = [now, time.strftime("%H:%M:%S"), holders[vip]]
        # Each VIP's doubles as spans [first sample seen doubled, first sample seen single again,
        # the hosts, the etcd lock's holder then]: a span whose lock holder is among the hosts is
        # a host keeping the VIP beside one that visibly holds it with the lock.
        spans = self.setdefault("spans", {})
        for vip in several:
            vip_spans = spans.setdefault(vip, [])
            if not vip_spans or vip_spans[-1][1] is not None:
                vip_spans.append([now, None, holders[vip], self._lock(vip)])
        for vip, vip_spans in spans.items():
            if vip_spans[-1][1] is None and vip not in several:
                vip_spans[-1][1] = now
        self.doubled.update(several)
        self["samples"] += 1
        self["samples_with_a_double"] += bool(several)
        self["most_doubles_at_once"] = max(self["most_doubles_at_once"], len(several))
        self["vips_ever_doubled"] = len(self.doubled)
        return len(several)

    def _lock(self, vip: str) -> str | None:
        try:
            return self.lock_of(vip)
        except Exception as exc:  # noqa: BLE001 - an overloaded etcd: recorded, the sampling goes on
            return f"? ({type(exc).__name__})"

    def watch(self, probe: Probe, stop: threading.Event, period: float = 0.5) -> threading.Thread:
        """Sample every `period` seconds in a thread until `stop` is set (the POST phase)."""
        def loop() -> None:
            while not stop.wait(period):
                self.count(probe.holders(self.vips, only_up=True))
        thread = threading.Thread(target=loop, name="doubles", daemon=True)
        thread.start()
        return thread


def lock_reader(lab: Lab) -> Callable[[str], str | None]:
    return lambda vip: lab.etcd.get(lock_key(vip))


def post_sampled(lab: Lab, probe: Probe, vips: list[str], new: list[str], limit: float, res: dict[str, Any],
                 log: Callable[[str], None]) -> bool:
    """post_phase for `new`, the holders of every VIP in `vips` sampled for doubles meanwhile."""
    doubles = res.setdefault("doubles_while_converging", Doubles(vips, lock_reader(lab)))
    stop = threading.Event()
    sampler = doubles.watch(probe, stop)
    try:
        return post_phase(lab, new, limit, res, log)
    finally:
        stop.set()
        sampler.join(10)


def converge(lab: Lab, probe: Probe, vips: list[str], t0: float, limit: float, res: dict[str, Any],
             log: Callable[[str], None]) -> bool:
    """Wait (bounded) until every VIP has exactly one holder, then until the APIs agree."""
    best: dict[str, int] = {}
    doubles = res.setdefault("doubles_while_converging", Doubles(vips, lock_reader(lab)))

    def all_single() -> bool:
        holders = probe.holders(vips, only_up=True)
        best["one_holder"] = sum(1 for v in vips if len(holders[v]) == 1)
        best["none"] = sum(1 for v in vips if not holders[v])
        best["several"] = doubles.count(holders)
        return best["one_holder"] == len(vips)

    try:
        wait_until(all_single, max(1.0, t0 + limit - time.monotonic()), 0.2, "one holder per VIP")
        res["converge_bound_s"] = round(time.monotonic() - t0, 2)
        log(f"scale {len(vips)}: one holder each after {res['converge_bound_s']} s")
    except WaitTimeout:
        res["converge_bound_s"] = None
        res["converge_reached"] = dict(best)
        log(f"scale {len(vips)}: NOT one holder each after {limit:.0f} s: {best}")
    agree: dict[str, Any] = {}

    def apis_agree() -> bool:
        ok, statuses = agreed(api_view(lab, lab.hosts), vips)
        agree.update(ok=ok, statuses=dict(statuses))
        return ok == len(vips)

    try:
        wait_until(apis_agree, max(1.0, t0 + limit - time.monotonic()), 1.0, "the APIs to agree")
        res["converge_api_s"] = round(time.monotonic() - t0, 2)
    except WaitTimeout:
        res["converge_api_s"] = None
        res["api_agreement_reached"] = agree
    res["converged"] = res["converge_bound_s"] is not None and res["converge_api_s"] is not None
    res["converge_limit_s"] = limit
    return res["converged"]


def measure_level(lab: Lab, probe: Probe, vips: list[str], window: float, warmup: float, res: dict[str, Any],
                  log: Callable[[str], None]) -> None:
    """After a warm-up: the idle window (CPU, etcd, holder changes) and memory."""
    time.sleep(warmup)
    res["workers_running"] = sum(1 for h in lab.hosts if h.agent and h.agent.running()
                                 for p in tree(h.agent.pid) if role(p) == "worker")
    log(f"scale {len(vips)}: measuring idle for {window:.0f} s ({res['workers_running']} workers)")
    res["idle"] = measure_idle(lab, probe, vips, window)
    procs = [p for h in lab.hosts if h.agent and h.agent.running() for p in tree(h.agent.pid)]
    mem = memory(procs)
    res["memory_mib"] = {r: mem_stats(entries) for r, entries in mem.items()}
    res["memory_mib"]["agent_total_uss_per_host"] = sum(e["uss"] for es in mem.values() for e in es) / len(lab.hosts)
    vm = psutil.virtual_memory()
    res["memory_mib"]["machine_used"] = (vm.total - vm.available) / MIB


def converge_limit(n: int) -> float:
    return 60 + 0.5 * n


def run_count(n: int, window: float, warmup: float, log: Callable[[str], None]) -> dict[str, Any]:
    """N VIPs on each host of a fresh lab: converge, idle, memory, then a dead host. A level
    that does not converge keeps its lab directory (the agents' and etcd's logs)."""
    vips = scale_vips(n)
    res: dict[str, Any] = {"vips_per_host": n, "hosts": 3, "workers_expected": 3 * n,
                           "addresses": f"{vips[0]} .. {vips[-1]}"}
    lab = Lab(hosts=3, agent_env={}).up()
    try:
        lab.start_agents(**SCALE_ENV)
        probe = Probe(lab)
        try:
            cpu0, t0 = machine_cpu(), time.monotonic()
            post_sampled(lab, probe, vips, vips, converge_limit(n), res, log)
            converge(lab, probe, vips, t0, converge_limit(n), res, log)
            res["converge_evidence"] = evidence(lab, lab.hosts, cpu0, t0)
            measure_level(lab, probe, vips, window, warmup, res, log)
            if res["converged"]:
                log(f"scale {n}: the busiest host dies")
                res["dead_host"] = dead_host(lab, probe, vips, 30 + 0.2 * n)
            res["evidence_end"] = evidence(lab, lab.hosts, cpu0, t0)
        finally:
            probe.close()
    finally:
        keep = not res.get("converged")
        if keep:
            res["logs_kept_in"] = str(lab.workdir)
        lab.close(keep_workdir=keep)
    return res


def run_ramp(start: int, stop: int, step: int, window: float, warmup: float, log: Callable[[str], None]) -> dict[str, Any]:
    """One lab, VIPs added `step` per host at a time from `start` up to `stop`; at each level:
    converge (bounded), idle window, memory. Stops at the first level that does not converge,
    or whose VIPs change holder while idle: that is where this machine's limit is."""
    out: dict[str, Any] = {"start": start, "stop": stop, "step": step, "levels": {}, "limit": None, "stopped_because": None}
    lab = Lab(hosts=3, agent_env={}).up()
    try:
        lab.start_agents(**SCALE_ENV)
        probe = Probe(lab)
        try:
            have: list[str] = []
            n = start
            while n <= stop:
                vips = scale_vips(n)
                res: dict[str, Any] = {"vips_per_host": n, "hosts": 3, "workers_expected": 3 * n, "ramp": True}
                out["levels"][str(n)] = res
                cpu0, t0 = machine_cpu(), time.monotonic()
                limit = converge_limit(n - len(have))
                complete = post_sampled(lab, probe, vips, vips[len(have):], limit, res, log)
                have = vips
                converge(lab, probe, vips, t0, limit, res, log)
                res["converge_evidence"] = evidence(lab, lab.hosts, cpu0, t0)
                measure_level(lab, probe, vips, window, warmup, res, log)
                changes = res["idle"]["holder_changes_in_window"]
                if not complete:
                    out["stopped_because"] = f"{n} VIPs per host: the POSTs did not all get through in {limit:.0f} s"
                elif not res["converged"]:
                    out["stopped_because"] = f"{n} VIPs per host: no agreed single holder for every VIP within {limit:.0f} s"
                elif changes:
                    out["stopped_because"] = f"{n} VIPs per host: {changes} holder changes while idle"
                if out["stopped_because"]:
                    log(f"scale ramp: stopping: {out['stopped_because']}")
                    break
                out["limit"] = n
                n += step
        finally:
            probe.close()
    finally:
        if out["stopped_because"]:
            out["logs_kept_in"] = str(lab.workdir)
        lab.close(keep_workdir=bool(out["stopped_because"]))
    return out


def run(counts: list[int], window: float, warmup: float, ramp: tuple[int, int, int] | None = None,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
        save: Callable[[dict], None] = lambda _: None, agents: str = "debian",
        compare: tuple[str, list[int]] | None = None) -> dict[str, Any]:
    """The counts (a fresh lab each), then the ramp, with agents on `agents`' libraries; then
    `compare`'s counts with agents on the other runtime's (benchmarks/runtime.py)."""
    out: dict[str, Any] = {"env": SCALE_ENV, "window_s": window, "warmup_s": warmup, "agents": agents, "counts": {}}

    def counts_on(where: dict[str, Any], runtime_name: str, numbers: list[int]) -> None:
        with runtime.agents_on(runtime_name):
            for n in numbers:
                try:
                    where[str(n)] = run_count(n, window, warmup, log)
                except Exception as exc:  # noqa: BLE001 - recorded; the next count still runs
                    where[str(n)] = {"vips_per_host": n, "error": f"{type(exc).__name__}: {exc}"}
                    log(f"scale {n} ({runtime_name}): failed: {exc}")
                save(out)

    counts_on(out["counts"], agents, counts)
    if ramp:
        try:
            with runtime.agents_on(agents):
                out["ramp"] = run_ramp(*ramp, window, warmup, log)
        except Exception as exc:  # noqa: BLE001
            out["ramp"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"scale ramp: failed: {exc}")
        save(out)
    if compare and compare[1]:
        out["compare"] = {"agents": compare[0], "counts": {}}
        counts_on(out["compare"]["counts"], compare[0], compare[1])
    return out
