"""Latency of a real agent's HTTP API with many VIPs: one host in the lab, N VIPs configured
(N workers, all ACTIVATED), then p50/p99 of `GET /ips` and of `POST /ips` + `DELETE
/ips/<id>` (a VIP that is not in the list: the POST forks its worker, the DELETE waits for
the worker to release it). Each request opens a new connection from the benchmark process
to 127.0.0.1:1313 inside the host's namespace (as link-client does on the host).

The whole stack is in the numbers: API process, pipe, supervisor, worker (fork, etcd, bind,
announcement on POST; unbind, lock release, exit on DELETE). `benchmarks/api_latency.py`
measures the API process alone, against a fake supervisor.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from tests.lab.lab import Lab
from tests.lab.waiting import WaitTimeout, wait_until

from .probe import stats, tree
from .measure import evidence, machine_cpu, mem_stats, memory
from .scale import SCALE_ENV, scale_vips

# Added and removed in the loop: below the scale VIPs (198.51.100.128+), above the lab's hosts.
TEMP_VIPS = [f"198.51.100.{i}/32" for i in range(120, 128)]


def _ms(values: list[float]) -> dict:
    s = stats([v * 1000 for v in values])
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}


def latency(host, get_requests: int, pairs: int, errors: list[str]) -> dict[str, dict]:
    for _ in range(10):  # warm-up
        host.api("GET", "/version")
    get_times = []
    for _ in range(get_requests):
        t = time.perf_counter()
        resp = host.api("GET", "/ips", timeout=30)
        get_times.append(time.perf_counter() - t)
        if resp.status != 200:
            errors.append(f"GET /ips: {resp.status}")
    post, delete, pair = [], [], []
    for k in range(pairs):
        vip = TEMP_VIPS[k % len(TEMP_VIPS)]
        t = time.perf_counter()
        resp = host.api("POST", "/ips", {"ip": vip}, timeout=30)
        t_post = time.perf_counter() - t
        if resp.status != 201:
            errors.append(f"POST {vip}: {resp.status} {resp.body}")
            continue
        t = time.perf_counter()
        gone = host.api("DELETE", f"/ips/{resp.body['id']}", timeout=30)
        t_delete = time.perf_counter() - t
        if gone.status != 204:
            errors.append(f"DELETE {vip}: {gone.status} {gone.body}")
            continue
        post.append(t_post)
        delete.append(t_delete)
        pair.append(t_post + t_delete)
    return {"GET /ips": _ms(get_times), "POST /ips": _ms(post), "DELETE /ips/<id>": _ms(delete),
            "POST /ips + DELETE": _ms(pair)}


def run(levels: list[int], get_requests: int, pairs: int,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """One agent; VIPs added up to each level in turn; at each level, once all are ACTIVATED
    (bounded), the latencies. Stops after the first level that does not fit (not all
    ACTIVATED in time): its latencies are measured all the same, saturated."""
    out: dict[str, Any] = {"hosts": 1, "env": SCALE_ENV, "get_requests": get_requests, "post_delete_pairs": pairs,
                           "levels": {}, "largest_fit": None}
    with Lab(hosts=1, agent_env={}) as lab:
        host = lab.host(1)
        lab.start_agents(**SCALE_ENV)
        have = 0
        for n in levels:
            vips = scale_vips(n)
            res: dict[str, Any] = {"vips": n}
            out["levels"][str(n)] = res
            cpu0, t0 = machine_cpu(), time.monotonic()
            limit = 60 + 0.5 * (n - have)
            post_times, errors = [], []
            for vip in vips[have:]:
                if time.monotonic() - t0 > limit:
                    errors.append(f"POST phase over its time limit ({limit:.0f} s)")
                    break
                t = time.perf_counter()
                resp = host.api("POST", "/ips", {"ip": vip}, timeout=30)
                post_times.append(time.perf_counter() - t)
                if resp.status != 201:
                    errors.append(f"{vip}: {resp.status} {resp.body}")
            have = n
            res["setup_post_ms"] = _ms(post_times)
            state: dict[str, Any] = {}

            def all_activated() -> bool:
                body = host.api("GET", "/ips", timeout=30).body
                statuses = [o["status"] for o in body["ips"]]
                state["activated"] = statuses.count("ACTIVATED")
                return state["activated"] == len(vips)

            try:
                wait_until(all_activated, max(1.0, t0 + limit - time.monotonic()), 0.5, f"{n} VIPs ACTIVATED")
                res["all_activated_after_s"] = round(time.monotonic() - t0, 2)
                res["fits"] = not errors
            except WaitTimeout:
                res["all_activated_after_s"] = None
                res["fits"] = False
                res["activated_reached"] = state.get("activated")
            log(f"api: {n} VIPs on one host: {state.get('activated')} ACTIVATED")
            res["evidence"] = evidence(lab, [host], cpu0, t0)
            res["latency_ms"] = latency(host, get_requests, pairs, errors)
            log(f"api: {n} VIPs: GET /ips p50 {res['latency_ms']['GET /ips'].get('median')} ms")
            res["errors"] = errors[:10]
            res["memory_mib"] = {r: mem_stats(e) for r, e in memory(tree(host.agent.pid)).items()}
            if not res["fits"]:
                break
            out["largest_fit"] = n
    return out
