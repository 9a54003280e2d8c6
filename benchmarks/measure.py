"""What the scale and API benchmarks measure on a running lab: CPU time of every agent process
and of etcd over an idle window, etcd's request rate, memory (USS, PSS, RSS) by role, the
evidence of why a level broke, and how long a dead host's VIPs take to move.
"""
from __future__ import annotations

import collections
import os
import re
import time
from typing import Any

import psutil

from tests.lab.lab import Host, Lab

from .probe import Probe, cpu_seconds, counter, etcd_metrics, grpc_counts, histogram_mean, role, stats, tree

MIB = 1024 * 1024


def machine_cpu() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0) + t.nice


def evidence(lab: Lab, hosts: list[Host], since_cpu: float, since_t: float) -> dict[str, Any]:
    """Why a count may have broken: CPU use, load, memory, etcd's latency, the agents' warnings."""
    ev: dict[str, Any] = {}
    elapsed = max(1e-6, time.monotonic() - since_t)
    ev["machine_cpu_busy_pct_of_all_cores"] = round(100 * (machine_cpu() - since_cpu) / elapsed / (os.cpu_count() or 1), 1)
    ev["loadavg"] = os.getloadavg()
    vm = psutil.virtual_memory()
    ev["memory_available_mib"] = round(vm.available / MIB)
    try:
        m = etcd_metrics(lab)
        ev["etcd_wal_fsync_mean_ms"] = _ms(histogram_mean(m, "etcd_disk_wal_fsync_duration_seconds"))
        ev["etcd_backend_commit_mean_ms"] = _ms(histogram_mean(m, "etcd_disk_backend_commit_duration_seconds"))
        ev["etcd_slow_apply_total"] = counter(m, "etcd_server_slow_apply_total")
        ev["etcd_leader_changes"] = counter(m, "etcd_server_leader_changes_seen_total")
        ev["etcd_grpc_errors"] = {f"{l.get('grpc_method')}/{l.get('grpc_code')}": v for n, l, v in m
                                  if n == "grpc_server_handled_total" and l.get("grpc_code") not in ("OK", None) and v}
    except Exception as exc:  # noqa: BLE001
        ev["etcd_metrics_error"] = str(exc)
    ev["agent_warnings"] = {h.name: log_summary(h) for h in hosts}
    return ev


_NUM = re.compile(r"\b(\d+(\.\d+)*|[0-9a-f]{8,})\b")


def log_summary(host: Host, top: int = 6) -> dict[str, Any]:
    """Counts of the agent's WARNING/ERROR lines, grouped with numbers and addresses blanked."""
    try:
        lines = host.log_path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    kinds: collections.Counter = collections.Counter()
    for line in lines:
        if " WARNING " in line or " ERROR " in line or "Traceback" in line:
            text = line.split(": ", 1)[-1] if ": " in line else line
            kinds[_NUM.sub("N", text)[:140]] += 1
    return {"warning_or_error_lines": sum(kinds.values()), "top": kinds.most_common(top)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def memory(procs: list[psutil.Process]) -> dict[str, list[dict[str, float]]]:
    by_role: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    for p in procs:
        r = role(p)
        try:
            m = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        by_role[r].append({"uss": m.uss / MIB, "pss": m.pss / MIB, "rss": m.rss / MIB})
    return dict(by_role)


def mem_stats(entries: list[dict[str, float]]) -> dict[str, dict]:
    return {k: stats([e[k] for e in entries]) for k in ("uss", "pss", "rss")} if entries else {}


def measure_idle(lab: Lab, probe: Probe, vips: list[str], window: float) -> dict[str, Any]:
    hosts = [h for h in lab.hosts if h.agent is not None and h.agent.running()]
    procs_by_host = {h.name: tree(h.agent.pid) for h in hosts}
    all_procs = [p for ps in procs_by_host.values() for p in ps]
    etcd_proc = psutil.Process(lab.etcd.pid)
    m0 = _etcd_counts(lab)
    c0 = cpu_seconds(all_procs)
    e0 = etcd_proc.cpu_times()
    mc0 = machine_cpu()
    t0 = time.monotonic()
    last = probe.holders(vips, only_up=True)
    changes = 0
    deadline = t0 + window
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        now = probe.holders(vips, only_up=True)
        changes += sum(1 for v in vips if now[v] != last[v])
        last = now
    elapsed = time.monotonic() - t0
    c1 = cpu_seconds(all_procs)
    e1 = etcd_proc.cpu_times()
    m1 = _etcd_counts(lab)
    mc1 = machine_cpu()
    roles = {p.pid: role(p) for p in all_procs}
    per_role: dict[str, float] = collections.defaultdict(float)
    worker_pcts = []
    for pid, before in c0.items():
        if pid not in c1:
            continue
        used = c1[pid] - before
        per_role[roles[pid]] += used
        if roles[pid] == "worker":
            worker_pcts.append(100 * used / elapsed)
    total = sum(per_role.values())
    n_workers = len(worker_pcts)
    rps = ({kind: {meth: (m1[kind].get(meth, 0) - m0[kind].get(meth, 0)) / elapsed for meth in m1[kind]}
            for kind in ("handled", "received")} if m0 and m1 else None)
    return {
        "window_s": round(elapsed, 2),
        "workers_measured": n_workers,
        "cpu_pct_of_a_core": {
            "per_worker": stats(worker_pcts),
            "all_agents_total": 100 * total / elapsed,
            "per_agent": 100 * total / elapsed / max(1, len(hosts)),
            "per_vip_whole_agent": 100 * total / elapsed / max(1, len(hosts) * len(vips)),
            "by_role_total": {r: 100 * s / elapsed for r, s in per_role.items()},
            "etcd": 100 * ((e1.user + e1.system) - (e0.user + e0.system)) / elapsed,
            "machine_busy_all_cores": 100 * (mc1 - mc0) / elapsed,
        },
        "etcd_rps": {
            "rpcs_handled": sum(rps["handled"].values()),
            "messages_received": sum(rps["received"].values()),
            "by_method_received": {k: round(v, 2) for k, v in sorted(rps["received"].items()) if v},
        } if rps else {"error": "etcd did not answer /metrics in time (overloaded)"},
        "holder_changes_in_window": changes,
        "loadavg": os.getloadavg(),
    }


def _etcd_counts(lab: Lab) -> dict[str, dict[str, float]] | None:
    """etcd's request counters, or None when an overloaded etcd does not answer in time."""
    try:
        return grpc_counts(etcd_metrics(lab))
    except (OSError, RuntimeError):
        return None


def dead_host(lab: Lab, probe: Probe, vips: list[str], timeout: float) -> dict[str, Any]:
    """The host holding most VIPs dies (link down, agent frozen and killed): time until each of
    its VIPs is bound on exactly one other host."""
    holders = probe.holders(vips, only_up=True)
    counts = collections.Counter(h for v in vips for h in holders[v] if len(holders[v]) == 1)
    victim_name, held = counts.most_common(1)[0]
    victim = lab.host(victim_name)
    mine = [v for v in vips if holders[v] == [victim_name]]
    t0 = time.monotonic()
    victim.link_down()
    victim.agent.kill()
    moved: dict[str, float] = {}
    deadline = t0 + timeout
    while time.monotonic() < deadline and len(moved) < len(mine):
        now_holders = probe.holders(mine, only_up=True)
        now = time.monotonic() - t0
        for v in mine:
            if v not in moved and len(now_holders[v]) == 1:
                moved[v] = now
        time.sleep(0.01)
    return {"victim": victim_name, "vips_held": len(mine), "moved": len(moved),
            "time_to_move": stats(list(moved.values())),
            "all_moved_after": max(moved.values()) if len(moved) == len(mine) and moved else None}
