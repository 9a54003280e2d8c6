"""How fast a VIP moves, measured in the lab (three hosts, a client, a real etcd).

    .venv/bin/python -m benchmarks.failover [--runs 10] [--keepalive 2s]

Scenarios, each repeated --runs times:
  host-death  the holder's link goes down: time until another host has the VIP bound, and
              until the client's neighbour entry points at the new holder's MAC;
  sigterm     SIGTERM to the holder's agent: time until another host has it bound, plus the
              time with no holder and with two holders (every host sampled every ~2 ms);
  api         POST /ips/<id>/failover on the holder: the same figures.
Results go to benchmarks/results/failover-<keepalive>.json and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
from pathlib import Path

from pyroute2 import IPRoute

from tests.lab import netns
from tests.lab.lab import IFACE, Lab
from tests.lab.waiting import wait_until

VIP = "198.51.100.50/32"
ADDR = VIP.split("/")[0]


class Probe:
    """Netlink sockets opened inside each namespace: a look costs ~0.1 ms, not a subprocess."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.sockets: dict[str, tuple[IPRoute, int]] = {}
        for ns in [h.ns for h in lab.hosts] + [lab.client_ns]:
            with netns.entered(ns):
                ipr = IPRoute()
            self.sockets[ns] = (ipr, ipr.link_lookup(ifname=IFACE)[0])

    def bound(self) -> list[str]:
        names = []
        for host in self.lab.hosts:
            ipr, index = self.sockets[host.ns]
            if any(m.get_attr("IFA_ADDRESS") == ADDR for m in ipr.get_addr(index=index, family=socket.AF_INET)):
                names.append(host.name)
        return names

    def neigh_mac(self) -> str | None:
        ipr, index = self.sockets[self.lab.client_ns]
        for msg in ipr.get_neighbours(family=socket.AF_INET, ifindex=index):
            if msg.get_attr("NDA_DST") == ADDR and msg.get_attr("NDA_LLADDR"):
                return str(msg.get_attr("NDA_LLADDR")).lower()
        return None

    def close(self) -> None:
        for ipr, _ in self.sockets.values():
            ipr.close()


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"n": len(values), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def settle(lab: Lab, probe: Probe, ids: dict[str, str], timeout: float = 20.0) -> str:
    holder = lab.wait_agreement(VIP, ids, timeout=timeout)
    # The client learns the holder's MAC (arp_accept=1 lets the announcements create it).
    mac = lab.host(holder).mac
    wait_until(lambda: probe.neigh_mac() == mac or lab.client_ping(ADDR), 10, 0.1, "client entry")
    wait_until(lambda: probe.neigh_mac() == mac, 10, 0.05, "client entry for the holder")
    return holder


def watch_move(probe: Probe, old: str, timeout: float, lab: Lab) -> dict:
    """Sample until another host holds the VIP and the client follows; measure gaps/doubles."""
    start = time.monotonic()
    last = start
    none_time = double_time = 0.0
    bound_at = neigh_at = None
    new = None
    while time.monotonic() - start < timeout:
        now = time.monotonic()
        holders = probe.bound()
        if not holders:
            none_time += now - last
        elif len(holders) > 1:
            double_time += now - last
        last = now
        others = [b for b in holders if b != old]
        if bound_at is None and others:
            bound_at, new = now - start, others[0]
        if new is not None and neigh_at is None and probe.neigh_mac() == lab.host(new).mac:
            neigh_at = now - start
        if bound_at is not None and neigh_at is not None:
            break
        time.sleep(0.002)
    return {"bound": bound_at, "neigh": neigh_at, "none": none_time, "double": double_time, "new": new}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--keepalive", default="2s", help="KEEPALIVE_INTERVAL of the agents (default: link's default)")
    parser.add_argument("--arp-interval", default="1s")
    args = parser.parse_args()
    env = {"KEEPALIVE_INTERVAL": args.keepalive, "ARP_GRATUITOUS_INTERVAL": args.arp_interval, "LOGGER_LEVEL": "warn"}
    results: dict[str, dict[str, list[float]]] = {"host-death": {}, "sigterm": {}, "api": {}}
    with Lab(hosts=3, agent_env=env) as lab:
        lab.start_agents()
        ids = lab.add_vip(VIP)
        probe = Probe(lab)
        try:
            for run in range(args.runs):
                # host death: the link goes down under the holder
                holder = settle(lab, probe, ids)
                lab.host(holder).link_down()
                got = watch_move(probe, holder, 15, lab)
                for key in ("bound", "neigh"):
                    if got[key] is not None:
                        results["host-death"].setdefault(key, []).append(got[key])
                lab.host(holder).link_up()
                # sigterm: the holder's agent leaves in an orderly way
                holder = settle(lab, probe, ids)
                os.kill(lab.host(holder).agent.pid, signal.SIGTERM)  # measure from the signal, not the exit
                got = watch_move(probe, holder, 10, lab)
                lab.host(holder).agent.stop()
                for key in ("bound", "neigh", "none", "double"):
                    if got[key] is not None:
                        results["sigterm"].setdefault(key, []).append(got[key])
                agent = lab.host(holder).start_agent()
                agent.wait_ready(30)
                # api: POST /ips/<id>/failover on the holder
                holder = settle(lab, probe, ids)
                resp = lab.host(holder).api("POST", f"/ips/{ids[holder]}/failover")
                if resp.status != 204:
                    raise SystemExit(f"failover refused: {resp}")
                got = watch_move(probe, holder, 10, lab)
                for key in ("bound", "neigh", "none", "double"):
                    if got[key] is not None:
                        results["api"].setdefault(key, []).append(got[key])
                print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
        finally:
            probe.close()
    summary = {scenario: {key: stats(values) for key, values in figures.items()} for scenario, figures in results.items()}
    out = Path(__file__).parent / "results" / f"failover-{args.keepalive}.json"
    out.write_text(json.dumps({"keepalive": args.keepalive, "runs": args.runs, "summary": summary, "samples": results}, indent=2) + "\n")
    print(f"| scenario ({args.keepalive} lease) | figure | median | p95 | max |\n|---|---|---|---|---|")
    for scenario, figures in summary.items():
        for key, s in figures.items():
            if s.get("n"):
                print(f"| {scenario} | {key} | {s['median'] * 1000:.0f} ms | {s['p95'] * 1000:.0f} ms | {s['max'] * 1000:.0f} ms |")
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("the benchmark builds network namespaces: run it as root")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
