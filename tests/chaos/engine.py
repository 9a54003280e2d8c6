"""The chaos run: three hosts, a three-member etcd cluster, several VIPs with priorities and
health checks, random faults at random times (seeded), and an observer that checks link's
promises all along.

Faults (one at a time, each undone before the next; health flags stay flipped across them),
drawn first from a shuffled deck that holds each kind once, so that even a short run injects
every kind, then from shuffled decks that hold each kind WEIGHTS times:
  worker-kill    SIGKILL to one VIP worker of a host;
  agent-kill     SIGKILL to every process of a host's agent, the host and its link staying up
                 (nothing can unbind its VIPs: their address lifetime ends them), the agent
                 started again after a while (same state directory);
  host-crash     a host dies: its link goes down, its agent is killed, its VIPs are removed
                 from eth1 (a rebooted host has none), the link comes back, the agent is
                 started again;
  link-flap      a host's link goes down for a while and comes back;
  etcd-member    one etcd member SIGKILLed, restarted after a while (same data dir);
  etcd-outage    all three members SIGKILLed, restarted after a while (same data dirs), the
                 LAN up (tests/chaos/wire_faults.py, as the three below);
  etcd-freeze    all three members SIGSTOPped (etcd hangs), SIGCONT after a while;
  etcd-cut       one host cut from etcd (blackhole routes), its LAN up, for a while;
  rogue          a foreign machine on the LAN binds a VIP, announces it once, leaves later;
  health-flip    a host's check for one VIP starts or stops failing (a flag file);
  api-burst      valid and invalid API calls in a row on one host.

The observer (tests/chaos/observer.py: a thread, raw netlink sockets opened inside each host
namespace, tens of microseconds a look) samples every host every few ms: which VIPs are bound
on eth1, and whether eth1 is up (a host whose link is down answers nobody: it holds nothing).
Judged afterwards against the fault timeline (tests/chaos/judge.py, which has the bounds):
  * double: two hosts or more hold a VIP in two samples in a row or more. For a VIP whose
    fault policy (its own, else the agents' configured default) is LinK's (activate, keep,
    release): allowed only while etcd is unreachable (all members down or frozen) or one of
    the holders is cut from it, and for CONVERGE after, and otherwise for at most
    DOUBLE_BOUND (a host that comes back from a partition holds the VIP until it notices the
    other holder; a killed agent's VIP lives until the end of its address lifetime, which
    etcd's lease-revoke tick does not wait for exactly). Under `arbitrate` (issue 15, point
    3): while etcd is out, one double of at most OUTAGE_DOUBLE per outage; after it is back,
    none beyond AFTER_ETCD (one lease); a host cut from etcd beside another holder for at most
    CUT_YIELD; otherwise DOUBLE_BOUND;
  * gap: no host holds a VIP. Allowed while no host is a candidate for it (down, cut from
    etcd, or its check failing), during an etcd outage and CONVERGE after it, and otherwise
    for at most GAP_BOUND, counted from the last moment it was allowed;
  * the client: its neighbour entry for each VIP (the observer reads the client namespace's
    table) points at a live holder's MAC (a host that has the VIP bound and its link up)
    within NEIGH_BOUND of any change: a new holder set, a rogue's claim (issue 15, points 1
    and 2). No entry at all is not judged (the client's next packet asks afresh);
  * after the run, once everything is undone: one agreed holder for every VIP, and each
    host's configured VIPs are the ones it had before the run.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from link import config as link_config
from tests.lab import netns
from tests.lab.etcd_members import Cluster, _healthy
from tests.lab.lab import IFACE, Host, Lab
from tests.lab.scripts import ScriptsDir
from tests.lab.waiting import wait_until

from .api_calls import ApiBursts, ApiCall
from .judge import HEALTH_INTERVAL, LEASE, Timeline, Window, find_violations, neigh_violations
from .observer import Observer
from .summary import summarize
from .wire_faults import WireFaults

# ---------------------------------------------------------------- settings
AGENT_ENV = {
    "KEEPALIVE_INTERVAL": f"{LEASE:g}",
    "HEALTH_CHECK_INTERVAL": f"{HEALTH_INTERVAL * 1000:.0f}ms",
    "HEALTH_CHECK_TIMEOUT": "1s",
    "FAIL_COUNT_BEFORE_FAILOVER": "3",
    "PREEMPT_DELAY": "2s",
    "ARP_GRATUITOUS_INTERVAL": "200ms",
    "LOGGER_LEVEL": "info",
}


@dataclass(frozen=True)
class VipPlan:
    ip: str
    priorities: dict[str, int | None]
    preempt: bool | None = None
    fault_policy: str | None = None


PLANS = [
    VipPlan("198.51.100.50/32", {"h1": 5, "h2": 10, "h3": 20}),
    VipPlan("198.51.100.51/32", {"h1": 20, "h2": 5, "h3": 10}, preempt=False),
    VipPlan("198.51.100.52/32", {"h1": None, "h2": None, "h3": None}),  # equal: the host's PRIORITY
    VipPlan("198.51.100.53/32", {"h1": 10, "h2": 20, "h3": 5}, fault_policy="keep"),
    VipPlan("2001:db8::54/128", {"h1": 10, "h2": 5, "h3": 20}),  # NDP instead of ARP (issue 15, point 5)
]

WEIGHTS = {"worker-kill": 3, "agent-kill": 2, "host-crash": 2, "link-flap": 2, "etcd-member": 2, "etcd-outage": 1,
           "etcd-freeze": 1, "etcd-cut": 2, "rogue": 2, "health-flip": 4, "api-burst": 2}


# ---------------------------------------------------------------- the run
class Chaos(ApiBursts, WireFaults):
    def __init__(self, lab: Lab, seed: int, scripts: ScriptsDir, log: Callable[[str], None] = print,
                 fault_policy: str | None = None) -> None:
        self.lab = lab
        self.scripts = scripts  # the agents' SCRIPTS_DIR: the health check program lives there
        self.seed = seed
        self.rng = random.Random(seed)
        self.say = log
        self.cluster = Cluster(lab)
        self.env: dict[str, str] = {}
        self.fault_policy = fault_policy  # FAULT_POLICY for the agents; None: their configured default
        # The checks run as nobody (agents as root, no SCRIPT_USER): flags where nobody can look.
        self.flags_dir = scripts.out / "flags"
        self.ids: dict[str, dict[str, str]] = {}  # vip -> {host: id}
        self.timeline = Timeline()
        self.faults: dict[str, int] = {k: 0 for k in WEIGHTS}
        self.api_calls: list[ApiCall] = []
        self.violations: list[str] = []
        self.t0 = time.monotonic()
        self.journal = open(lab.workdir / "chaos.log", "a", encoding="utf-8")
        self.observer: Observer | None = None
        self.before: dict[str, Any] = {}
        self.init_wire_faults()

    # -- bookkeeping --------------------------------------------------------------------
    def note(self, text: str) -> None:
        t = time.monotonic()
        self.timeline.events.append((t, text))
        line = f"+{t - self.t0:8.3f}s {text}"
        self.journal.write(line + "\n")
        self.journal.flush()

    def flag(self, host: str, vip: str) -> Path:
        return self.flags_dir / f"{host}-{vip.split('/')[0]}"

    def vips(self) -> list[str]:
        return [p.ip for p in PLANS]

    def plan(self, vip: str) -> VipPlan:
        return next(p for p in PLANS if p.ip == vip)

    # -- setting up -----------------------------------------------------------------------
    def setup(self) -> None:
        self.flags_dir.mkdir(parents=True, exist_ok=True)
        self.healthy = self.scripts.add("healthy", 'test ! -e "$1"\n')  # healthy while the flag is absent
        self.cluster.start()
        self.env = {**AGENT_ENV, "ETCD_HOSTS": self.cluster.urls, "SCRIPTS_DIR": str(self.scripts.path)}
        if self.fault_policy:
            self.env["FAULT_POLICY"] = self.fault_policy
        self.timeline.policies = self.policies()
        self.lab.start_agents(**self.env)
        for plan in PLANS:
            self.ids[plan.ip] = {}
            for host in self.lab.hosts:
                resp = host.api("POST", "/ips", self.vip_body(plan, host.name))
                if resp.status != 201:
                    raise AssertionError(f"POST /ips {plan.ip} on {host.name}: {resp}")
                self.ids[plan.ip][host.name] = resp.body["id"]
        for plan in PLANS:
            holder = self.lab.wait_agreement(plan.ip, self.ids[plan.ip], timeout=30, lab_etcd=False)
            # The client talks to each VIP once: it has an entry for it from then on.
            mac = self.lab.host(holder).mac
            wait_until(lambda: self.lab.neigh(plan.ip) == mac or self.lab.client_ping(plan.ip), 10, 0.1,
                       f"a client entry for {plan.ip}")
            wait_until(lambda: self.lab.neigh(plan.ip) == mac, 10, 0.05, f"the client's entry for {plan.ip} ({holder})")
        self.before = self.configured()
        self.note(f"set up: seed {self.seed}, {len(PLANS)} VIPs on {len(self.lab.hosts)} hosts, etcd {self.cluster.urls}, "
                  f"fault policies {self.timeline.policies}")

    def policies(self) -> dict[str, str]:
        """Each VIP's effective fault policy: its own, else the agents' (their environment
        read by link's own config loader, so a changed default is followed)."""
        host = self.lab.hosts[0]
        default = link_config.load(self.lab.agent_env_for(host, self.env), check_interface=False).fault_policy
        return {p.ip: p.fault_policy or default for p in PLANS}

    def vip_body(self, plan: VipPlan, host: str) -> dict:
        body: dict[str, Any] = {"ip": plan.ip, "checks": [
            {"type": "EXEC", "command": [self.healthy, str(self.flag(host, plan.ip))]}]}
        if plan.priorities.get(host) is not None:
            body["priority"] = plan.priorities[host]
        if plan.preempt is not None:
            body["preempt"] = plan.preempt
        if plan.fault_policy is not None:
            body["fault_policy"] = plan.fault_policy
        return body

    def configured(self) -> dict[str, Any]:
        """Each host's configured VIPs as its API lists them (what must survive the run)."""
        out = {}
        for h in self.lab.hosts:
            resp = h.api("GET", "/ips", timeout=10)
            if resp.status != 200:
                raise AssertionError(f"GET /ips on {h.name}: {resp}")
            out[h.name] = sorted(
                (o["id"], o["ip"], o.get("priority"), json.dumps(o.get("checks"), sort_keys=True),
                 o.get("fault_policy"), o.get("preempt"))
                for o in resp.body["ips"])
        return out

    # -- the run --------------------------------------------------------------------------
    def run(self, seconds: float) -> None:
        self.observer = Observer(self.lab, self.vips(), limit=seconds + 600).start()
        self.note("observer started")
        deadline = time.monotonic() + seconds
        deck = list(WEIGHTS)  # each kind once first
        self.rng.shuffle(deck)
        try:
            while time.monotonic() < deadline:
                if not deck:
                    deck = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
                    self.rng.shuffle(deck)
                kind = deck.pop()
                self.faults[kind] += 1
                getattr(self, "fault_" + kind.replace("-", "_"))()
                self.pause(self.rng.uniform(0.3, 2.5))
        finally:
            self.restore()
            self.note("everything restored")

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)  # the chaos schedule: random intervals between and within faults

    def up_hosts(self) -> list[Host]:
        return [h for h in self.lab.hosts if h.agent is not None and h.agent.running()]

    # -- faults ---------------------------------------------------------------------------
    def fault_worker_kill(self) -> None:
        host = self.rng.choice(self.up_hosts())
        workers = {pid: t for pid, t in host.agent.worker_titles().items()
                   if any(v in t for v in self.vips())}
        if not workers:
            self.note(f"worker-kill: no worker on {host.name}")
            return
        pid = self.rng.choice(sorted(workers))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.note(f"worker-kill: {host.name} pid {pid} ({workers[pid]})")

    def fault_agent_kill(self) -> None:
        host = self.rng.choice(self.up_hosts())
        window = Window(time.monotonic())
        self.timeline.host_down.setdefault(host.name, []).append(window)
        host.agent.kill()
        bound = [vip for vip in self.vips() if host.has(vip)]
        self.note(f"agent-kill: {host.name}'s agent SIGKILLed, its link up ({len(bound)} VIP(s) left bound)")
        self.pause(self.rng.uniform(0.5, 4.0))
        self.restart_agent(host, window, "agent-kill")

    def fault_host_crash(self) -> None:
        host = self.rng.choice(self.up_hosts())
        window = Window(time.monotonic())
        self.timeline.host_down.setdefault(host.name, []).append(window)
        host.link_down()
        host.agent.kill()
        self.note(f"host-crash: {host.name} link down, agent killed")
        self.pause(self.rng.uniform(1.0, 5.0))
        for vip in self.vips():  # a rebooted host has no VIP on its interface
            if host.has(vip):
                host.del_addr(vip)
        host.link_up()
        self.restart_agent(host, window, "host-crash")

    def restart_agent(self, host: Host, window: Window, kind: str) -> None:
        host.start_agent(**self.env).wait_ready(30)
        wait_until(lambda: self.agent_booted(host), 30, 0.1, f"{host.name}'s workers to boot")
        window.end = time.monotonic()
        self.note(f"{kind}: {host.name} back (agent restarted, workers booted)")

    def agent_booted(self, host: Host) -> bool:
        resp = host.api("GET", "/ips", timeout=5)
        ips = resp.body.get("ips", []) if resp.status == 200 else []
        return len(ips) >= len(PLANS) and all(o["status"] != "BOOTING" for o in ips)

    def fault_link_flap(self) -> None:
        host = self.rng.choice(self.up_hosts())
        window = Window(time.monotonic())
        self.timeline.host_down.setdefault(host.name, []).append(window)
        host.link_down()
        self.note(f"link-flap: {host.name} down")
        self.pause(self.rng.uniform(0.5, 4.0))
        host.link_up()
        window.end = time.monotonic()
        self.timeline.link_back.setdefault(host.name, []).append(window.end)
        self.note(f"link-flap: {host.name} up")

    def fault_etcd_member(self) -> None:
        member = self.rng.choice(self.cluster.members)
        window = Window(time.monotonic())
        self.timeline.member_down.append(window)
        member.kill()
        self.note(f"etcd-member: {member.name} killed")
        self.pause(self.rng.uniform(1.0, 4.0))
        member.start()
        wait_until(lambda: _healthy(member), 30, 0.1, f"etcd member {member.name} to be healthy again")
        window.end = time.monotonic()
        self.note(f"etcd-member: {member.name} back")

    def fault_health_flip(self) -> None:
        flagged = [(h.name, v) for h in self.lab.hosts for v in self.vips() if self.flag(h.name, v).exists()]
        # Keep most checks passing: with many flags up, lower one.
        if flagged and (len(flagged) >= 4 or self.rng.random() < 0.4):
            host, vip = self.rng.choice(flagged)
            self.flag(host, vip).unlink()
            for w in self.timeline.unhealthy.get((host, vip), []):
                if w.end is None:
                    w.end = time.monotonic()
            self.note(f"health-flip: {host} {vip} passes again")
        else:
            host, vip = self.rng.choice(self.lab.hosts).name, self.rng.choice(self.vips())
            if self.flag(host, vip).exists():
                return
            self.timeline.unhealthy.setdefault((host, vip), []).append(Window(time.monotonic()))
            self.flag(host, vip).touch()
            self.note(f"health-flip: {host} {vip} fails")

    def fault_api_burst(self) -> None:
        host = self.rng.choice(self.up_hosts())
        calls: list[Callable[[], None]] = []
        n = self.rng.randint(3, 8)
        calls += [lambda: self.valid_call(host) for _ in range(n)]
        calls += [lambda: self.invalid_call(host) for _ in range(n)]
        self.rng.shuffle(calls)
        for call in calls:
            call()
        self.note(f"api-burst: {2 * n} calls on {host.name}")

    # -- the end --------------------------------------------------------------------------
    def restore(self) -> None:
        """Undo everything: flags removed, links up, etcd thawed and reachable from every host,
        the rogue gone, every etcd member and agent running."""
        self.end_wire_faults()
        for path in self.flags_dir.glob("*"):
            path.unlink()
        now = time.monotonic()
        for windows in self.timeline.unhealthy.values():
            for w in windows:
                w.end = w.end or now
        for member in self.cluster.members:
            if not member.running():
                member.start()
        for member in self.cluster.members:
            wait_until(lambda m=member: _healthy(m), 30, 0.1, f"etcd member {member.name} to be healthy")
        for w in self.timeline.etcd_out:
            w.end = w.end or time.monotonic()
        for h in self.lab.hosts:
            netns.ip(h.ns, "link", "set", IFACE, "up")
            if h.agent is None or not h.agent.running():
                for vip in self.vips():
                    if h.has(vip):
                        h.del_addr(vip)
                h.start_agent(**self.env).wait_ready(30)
        for windows in self.timeline.host_down.values():
            for w in windows:
                w.end = w.end or time.monotonic()

    def finish(self) -> dict[str, Any]:
        """Stop observing once everything converged; judge; the summary."""
        converged = True
        for vip in self.vips():
            try:
                self.lab.wait_agreement(vip, self.ids[vip], timeout=30, lab_etcd=False)
            except AssertionError as exc:
                converged = False
                self.violations.append(f"after the run, {vip} did not converge to one agreed holder: {exc}")
        assert self.observer is not None
        self.observer.stop()
        self.note("observer stopped")
        if self.observer.error:
            self.violations.append(f"the observer failed: {self.observer.error}")
        after = self.configured() if converged else {}
        if converged and after != self.before:
            self.violations.append(f"configured VIPs changed:\nbefore {self.before}\nafter  {after}")
        self.judge()
        for c in self.api_calls:
            if not c.valid and (c.status is None or not 400 <= c.status < 500):
                self.violations.append(f"invalid call {c.method} {c.path} answered {c.status} {c.error}")
            if c.valid and c.error:
                self.violations.append(f"valid call {c.method} {c.path} answered {c.status}: {c.error}")
        summary = self.summary()
        self.journal.write(json.dumps(summary, indent=1, default=str) + "\n")
        self.journal.close()
        return summary

    def judge(self) -> None:
        assert self.observer is not None
        hosts = [h.name for h in self.lab.hosts]
        self.violations += find_violations(self.observer.episodes, self.timeline, hosts, self.t0)
        macs = {h.name: h.mac for h in self.lab.hosts}
        end = self.observer.stopped_at or time.monotonic()
        for vip, view in self.observer.views.items():
            self.violations += neigh_violations(vip, view, macs, self.timeline, end, self.t0)

    def summary(self) -> dict[str, Any]:
        return summarize(self)
