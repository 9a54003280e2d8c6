"""A VIP moving between three hosts, live: `python -m tests.lab.demo` (as root).

Builds the namespace lab (bridge + etcd, hosts h1..h3, a client), starts an agent on each host,
adds 198.51.100.50/32 on all three, shows the holder and the client's neighbour table, then
kills the holder (SIGKILL of its agent and its link down) and prints the VIP moving as it
happens, then hands it over once more with a SIGTERM. Removes everything it made, always.
Exit status: 0 when the VIP moved both times, 1 when it did not, 2 when the lab cannot run.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from . import netns
from .lab import CLIENT_IP, ETCD_URL, IFACE, LAB_AGENT_ENV, Lab, lock_key
from .waiting import WaitTimeout, wait_until

VIP = "198.51.100.50/32"
ADDR = VIP.split("/")[0]
TOTAL_LIMIT = 55.0      # the whole demo, seconds (SIGALRM unwinds and cleans up after that)
MOVE_LIMIT = 8.0        # how long a move may take before the demo calls it a failure

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {text}", flush=True)


def client_neigh_line(lab: Lab) -> str:
    out = netns.ip(lab.client_ns, "neigh", "show", ADDR, "dev", IFACE, check=False).stdout.strip()
    host = lab.neigh_host(VIP)
    return f"{out or '(no entry)'}" + (f"   <- {host}'s MAC" if host else "")


def statuses(lab: Lab, ids: dict[str, str]) -> str:
    parts = []
    for name, vip_id in ids.items():
        try:
            obj = lab.ip_object(name, vip_id)
            parts.append(f"{name}={obj['status']}")
        except Exception:  # noqa: BLE001 - an agent that is down
            parts.append(f"{name}=(down)")
    return ", ".join(parts)


def follow_move(lab: Lab, old: str, limit: float, start: float, dead: list[str] = ()) -> tuple[str | None, float]:
    """Print every change of who has the VIP bound and of the client's entry, until a host
    other than `old` holds it and the client points at it (bounded by `limit`). Times count
    from `start`, taken just before the action."""
    last_bound: list[str] | None = None
    last_mac: str | None = None
    new: str | None = None
    for _ in range(int(limit / 0.02) + 1):
        bound = lab.bound(VIP)
        mac = lab.neigh(VIP)
        now = time.monotonic() - start
        if bound != last_bound:
            names = [f"{b} (dead: link down)" if b in dead else b for b in bound]
            say(f"  +{now:5.3f}s  {ADDR} bound on: {', '.join(names) or 'nobody'}")
            last_bound = bound
        if mac != last_mac:
            say(f"  +{now:5.3f}s  client neighbour {ADDR} -> {mac} ({lab.neigh_host(VIP)})")
            last_mac = mac
        candidates = [b for b in bound if b != old and b not in dead]
        if len(candidates) == 1 and new is None:
            new = candidates[0]
            moved_at = now
        if new and mac == lab.host(new).mac:
            return new, moved_at
        if now >= limit:
            break
        time.sleep(0.02)
    return new, time.monotonic() - start


def run(lab: Lab) -> int:
    say(f"lab: bridge namespace {lab.bridge_ns} (br0 198.51.100.1/24, etcd {ETCD_URL}), "
        f"client {lab.client_ns} ({CLIENT_IP})")
    for h in lab.hosts:
        say(f"     host {h.name}: namespace {h.ns}, {IFACE} {h.ip}/24, MAC {h.mac}")
    say("agent settings: " + " ".join(f"{k}={v}" for k, v in LAB_AGENT_ENV.items() if k != "LOGGER_LEVEL"))
    agents = lab.start_agents()
    say("agents up: " + ", ".join(f"{a.host.name} (pid {a.pid})" for a in agents))

    ids = lab.add_vip(VIP)
    say(f"POST /ips {{\"ip\": \"{VIP}\"}} on h1, h2, h3 -> " + ", ".join(f"{n}: {i}" for n, i in ids.items()))
    holder = lab.wait_agreement(VIP, ids, timeout=10)
    say(f"holder: {holder}   ({statuses(lab, ids)}; etcd {lock_key(VIP)} = {lab.etcd.get(lock_key(VIP))})")
    mac = lab.host(holder).mac
    wait_until(lambda: lab.neigh(VIP) == mac, 3, what="the client to learn the VIP from gratuitous ARP")
    say(f"client neighbour table: {client_neigh_line(lab)}")
    say(f"client ping {ADDR}: {'ok' if lab.client_ping(VIP) else 'FAILED'}")

    ok = True
    # 1. The holder dies: its agent is SIGKILLed and its link goes down.
    dead = lab.host(holder)
    say(f"--- killing {holder}: SIGKILL of its agent (pid {dead.agent.pid}) and `ip link set {IFACE} down`")
    start = time.monotonic()
    dead.agent.kill()
    dead.link_down()
    new, took = follow_move(lab, holder, MOVE_LIMIT, start, dead=[holder])
    if new and lab.neigh(VIP) == lab.host(new).mac:
        say(f"VIP moved {holder} -> {new}: bound {took:.3f}s after the kill; client: {client_neigh_line(lab)}")
        del ids[holder]
        new = lab.wait_agreement(VIP, ids, timeout=5, dead=[holder])
        say(f"  {statuses(lab, ids)}; client ping {ADDR}: {'ok' if lab.client_ping(VIP) else 'FAILED'}")
    else:
        say(f"FAILED: the VIP did not move away from {holder} within {MOVE_LIMIT}s")
        return 1

    # 2. A clean hand-over: SIGTERM to the new holder's agent.
    leaving = lab.host(new)
    say(f"--- SIGTERM to {new}'s agent (pid {leaving.agent.pid}): it releases the VIP")
    start = time.monotonic()
    os.kill(leaving.agent.pid, signal.SIGTERM)
    third, took = follow_move(lab, new, MOVE_LIMIT, start, dead=[holder])
    if third and lab.neigh(VIP) == lab.host(third).mac:
        say(f"VIP moved {new} -> {third}: bound {took:.3f}s after the SIGTERM; client: {client_neigh_line(lab)}")
        rc = leaving.agent.proc.wait(10)
        say(f"  {new}'s agent exited with status {rc}; {third}: {statuses(lab, {third: ids[third]})}")
    else:
        say(f"FAILED: the VIP did not move away from {new} within {MOVE_LIMIT}s")
        ok = False
    return 0 if ok else 1


class DemoTimeout(BaseException):
    """Not an Exception: no `except Exception` in a wait loop may swallow it."""


def _timeout(_signum: int, _frame: object) -> None:
    raise DemoTimeout(f"the demo took more than {TOTAL_LIMIT:g}s")


def main() -> int:
    reason = netns.usable()
    if reason:
        print(f"demo: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, TOTAL_LIMIT)
    lab = Lab(hosts=3)
    rc = 1
    try:
        say("building the lab (network namespaces on a private bridge; nothing touches this machine's interfaces)")
        lab.up()
        rc = run(lab)
    except (WaitTimeout, DemoTimeout, AssertionError, RuntimeError) as exc:
        say(f"FAILED: {exc}")
        say(f"agent logs:\n{lab.logs(30)}")
        rc = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        say("cleaning up: agents, etcd, namespaces")
        lab.close()
        left = [n for n in netns.listing() if n.startswith(lab.prefix)]
        say("done" + (f" (namespaces left: {left})" if left else "; nothing left behind"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
