"""The lab: hosts as network namespaces on a bridge of their own, a client, etcd, agents.

    bridge ns  <prefix>br : br0 198.51.100.1/24, etcd on 198.51.100.1:2379 (peer 2380)
    host ns    <prefix>h1 : eth1 198.51.100.11/24 2001:db8::11/64 (MAC 02:00:00:00:01:01), agent "h1"
    ...
    client ns  <prefix>cl : eth1 198.51.100.100/24 2001:db8::100/64, arp_accept=1 (gratuitous
                            ARP creates neighbour entries)

Each veth pair is created inside the bridge namespace with its peer sent straight to its host
namespace, so nothing ever appears in the machine's own namespace. Every process is started
by the lab, kept by PID and stopped by PID; `close()` runs on any failure, and an atexit hook
plus SIGTERM/SIGHUP handlers clean up labs still open when the process ends. A lab left
behind by a SIGKILLed run is swept by the next one (its namespaces carry the dead PID).
"""
from __future__ import annotations

import atexit
import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import http, netns, procs
from .pcap import Capture
from .waiting import GiveUp, wait_until

SUBNET = "198.51.100"
SUBNET6 = "2001:db8::"  # hosts 2001:db8::11.., client 2001:db8::100 (/64, no DAD)
BRIDGE_IP = f"{SUBNET}.1"
CLIENT_IP = f"{SUBNET}.100"
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_URL = f"http://{BRIDGE_IP}:{ETCD_CLIENT_PORT}"
AGENT_PORT = 1313
IFACE = "eth1"

# Timings for tests: a 1 s lease (etcd runs with a 250 ms election timeout, so 1 s is granted).
LAB_AGENT_ENV = {
    "KEEPALIVE_INTERVAL": "1",
    "ARP_GRATUITOUS_INTERVAL": "200ms",
    "ARP_GRATUITOUS_COUNT": "3",
    "LOGGER_LEVEL": "info",
}

NAME_RE = re.compile(r"^lk(\d+)-[0-9a-f]{4}-")


def lock_key(vip: str) -> str:
    """The etcd key whose value is the VIP's holder: /link/default/198.51.100.50_32."""
    return "/link/default/" + vip.replace("/", "_")


def host_mac(index: int) -> str:
    return f"02:00:00:00:01:{index:02x}"


CLIENT_MAC = "02:00:00:00:02:01"


REPO = Path(__file__).resolve().parents[2]


def agent_command() -> list[str]:
    """The agent as installed next to the running interpreter (the venv's console script), or
    this checkout run by the interpreter LINK_AGENT_PYTHON names: the benchmarks set it to
    /usr/bin/python3 to measure agents on Debian's own libraries, the ones the .deb runs on
    (-s: nothing from a user's site-packages)."""
    python = os.environ.get("LINK_AGENT_PYTHON")
    if python:
        return [python, "-s", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); "
                "from link.agent.link_agent import main; sys.exit(main())"]
    script = Path(sys.executable).parent / "link-agent"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from link.agent.link_agent import main; sys.exit(main())"]


def _tail(path: str | os.PathLike, lines: int = 60) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except FileNotFoundError:
        return ""


class Etcd:
    """A one-member etcd inside the bridge namespace, explicit flags, its own data dir."""

    def __init__(self, ns: str, workdir: Path) -> None:
        self.ns = ns
        self.data_dir = workdir / "etcd-data"
        self.log_path = workdir / "etcd.log"
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> None:
        peer = f"http://{BRIDGE_IP}:{ETCD_PEER_PORT}"
        argv = [
            "ip", "netns", "exec", self.ns, "/usr/bin/etcd",
            "--name", "lab", "--data-dir", str(self.data_dir),
            "--listen-client-urls", ETCD_URL, "--advertise-client-urls", ETCD_URL,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"lab={peer}", "--initial-cluster-state", "new",
            "--initial-cluster-token", f"lab-{self.ns}",
            "--heartbeat-interval", "50", "--election-timeout", "250",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]
        # A clean environment: ETCD_* variables of the caller must not change the flags.
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, start_new_session=True)

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise GiveUp(f"etcd exited with {self.proc.returncode}:\n{_tail(self.log_path)}")
            resp = http.request(self.ns, BRIDGE_IP, ETCD_CLIENT_PORT, "GET", "/health", timeout=1.0)
            return resp.status == 200 and isinstance(resp.body, dict) and resp.body.get("health") == "true"

        wait_until(healthy, timeout, 0.05, "etcd to be healthy")

    def _call(self, path: str, body: dict) -> Any:
        resp = http.request(self.ns, BRIDGE_IP, ETCD_CLIENT_PORT, "POST", path, body=body, timeout=2.0)
        if resp.status != 200:
            raise RuntimeError(f"etcd {path}: {resp}")
        return resp.body

    def get(self, key: str) -> str | None:
        """The value of `key` (through etcd's JSON gateway, so no gRPC in the test process)."""
        body = self._call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = body.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def lease(self, key: str) -> int | None:
        """The id of the lease `key` is attached to (None: no such key, 0: no lease)."""
        body = self._call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()})
        kvs = body.get("kvs") or []
        return int(kvs[0].get("lease", 0)) if kvs else None

    def put(self, key: str, value: str | bytes, lease: int = 0) -> None:
        """What anyone with write access to etcd can do (`etcdctl put`): any bytes, by default
        on no lease (then the key never expires)."""
        raw = value if isinstance(value, bytes) else value.encode()
        body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(raw).decode()}
        self._call("/v3/kv/put", {**body, "lease": str(lease)} if lease else body)

    def delete(self, key: str) -> None:
        self._call("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})

    def grant(self, ttl: int) -> int:
        """A lease of `ttl` seconds, never refreshed (for `put`)."""
        return int(self._call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keys(self, prefix: str = "/") -> dict[str, str]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = self._call("/v3/kv/range", {"key": base64.b64encode(prefix.encode()).decode(),
                                           "range_end": base64.b64encode(end.encode()).decode()})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in body.get("kvs") or []}

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        procs.terminate([proc.pid], grace=3.0)
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


class Agent:
    """One `link-agent` inside a host namespace; its log is `<workdir>/<host>.log` (appended)."""

    def __init__(self, host: "Host", env: dict[str, str]) -> None:
        self.host = host
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.known_pids: set[int] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "agent not started"
        return self.proc.pid

    def start(self, output: int | None = None) -> "Agent":
        """`output`: an fd for the agent's stdout and stderr instead of its log file (e.g. a
        pipe the test reads, or does not)."""
        with open(self.host.log_path, "ab") as log:
            log.write(f"\n===== lab: starting agent {self.host.name} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host.ns, *agent_command()],
                stdin=subprocess.DEVNULL, stdout=log if output is None else output,
                stderr=log if output is None else output, env=self.env,
                start_new_session=True, cwd=str(self.host.state_dir.parent),
            )
        self.known_pids = {self.proc.pid}
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.running():
                raise GiveUp(f"agent {self.host.name} exited with {self.proc.returncode}:\n{_tail(self.host.log_path)}")
            return self.api("GET", "/ips", timeout=1.0).status == 200
        try:
            wait_until(ready, timeout, 0.05, f"agent {self.host.name} to answer GET /ips")
        except GiveUp:
            raise
        except Exception as exc:
            raise type(exc)(f"{exc}\n--- {self.host.log_path} ---\n{_tail(self.host.log_path)}") from None

    def credentials(self) -> dict[str, str]:
        """The Authorization header for this agent's USER/PASSWORD ({} without a PASSWORD)."""
        if not self.env.get("PASSWORD"):
            return {}
        token = base64.b64encode(f"{self.env.get('USER', '')}:{self.env['PASSWORD']}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def api(self, method: str, path: str, body: Any = None, timeout: float = 5.0, *, auth: bool = True,
            address: str = "127.0.0.1", ns: str | None = None, **kw: Any) -> http.Response:
        """A request to this agent, from its own namespace to loopback unless `ns`/`address` say
        otherwise; with the agent's credentials when it has a PASSWORD, unless `auth` is False."""
        headers = {**(self.credentials() if auth else {}), **(kw.pop("headers", None) or {})}
        return http.request(ns or self.host.ns, address, AGENT_PORT, method, path, body=body, timeout=timeout,
                            headers=headers, **kw)

    def tree(self) -> list[int]:
        """The agent and every process below it, now (remembered for the clean-up)."""
        if not self.running():
            return []
        pids = [self.pid, *procs.descendants(self.pid)]
        self.known_pids.update(pids)
        return pids

    def titles(self) -> dict[int, str]:
        return {pid: procs.title(pid) for pid in self.tree()}

    def worker_titles(self) -> dict[int, str]:
        return {pid: t for pid, t in self.titles().items() if t.startswith("link: vip ")}

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the agent (only: it stops its own children) and wait for its exit."""
        if self.proc is None:
            return None
        self.tree()
        procs.sigterm_and_wait(self.proc, timeout)
        if self.proc.poll() is None or self._leftovers():
            self.kill()
        return self.proc.returncode

    def _leftovers(self) -> list[int]:
        """Processes once seen below the agent that still live in its namespace (checked:
        a PID remembered from an earlier worker may belong to anything by now)."""
        return [p for p in sorted(self.known_pids)
                if p != self.pid and procs.alive(p) and netns.holds(self.host.ns, p)]

    def kill(self) -> None:
        """SIGKILL the agent and all its processes, as a host dying: nobody gets to react.

        The whole tree is frozen first (SIGSTOP, the supervisor before its children, so it
        forks no more), then killed: otherwise the supervisor would see its workers die and
        remove their VIPs, or a worker would see its supervisor die and release its VIP. So
        the VIPs stay bound, as on a host that lost power.
        """
        if self.proc is None:
            return
        # The agent's own PID only while it is not reaped (until then it cannot be reused).
        own = [self.proc.pid] if self.proc.poll() is None else []
        procs.signal_pids(own, signal.SIGSTOP)
        tree = sorted(set(self.tree()[1:]) | set(self._leftovers()))
        procs.signal_pids(tree, signal.SIGSTOP)
        procs.kill(own + tree)
        try:
            self.proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Host:
    lab: "Lab"
    index: int
    ns: str
    ip: str
    mac: str
    agent: Agent | None = None

    @property
    def name(self) -> str:
        return f"h{self.index}"

    @property
    def state_dir(self) -> Path:
        return self.lab.workdir / self.name / "state"

    @property
    def log_path(self) -> Path:
        return self.lab.workdir / f"{self.name}.log"

    def addresses(self) -> list[str]:
        out = netns.ip(self.ns, "-j", "addr", "show", "dev", IFACE).stdout
        return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out or "[]") for a in link.get("addr_info", [])]

    def has(self, vip: str) -> bool:
        return vip in self.addresses()

    def del_addr(self, vip: str) -> None:
        netns.ip(self.ns, "addr", "del", vip, "dev", IFACE)

    def link_down(self) -> None:
        netns.ip(self.ns, "link", "set", IFACE, "down")

    def link_up(self) -> None:
        netns.ip(self.ns, "link", "set", IFACE, "up")

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> http.Response:
        assert self.agent is not None, f"no agent on {self.name}"
        return self.agent.api(method, path, body, **kw)

    def start_agent(self, output: int | None = None, **env: str) -> Agent:
        if self.agent is not None and self.agent.running():
            raise RuntimeError(f"the agent of {self.name} is still running (pid {self.agent.pid})")
        self.agent = Agent(self, self.lab.agent_env_for(self, env))
        self.lab.agents.append(self.agent)  # every agent ever started is stopped at close()
        return self.agent.start(output)


# ---------------------------------------------------------------- the safety net
_LIVE: dict[int, "Lab"] = {}
_LIVE_LOCK = threading.Lock()
_NET_INSTALLED = False


def _close_all() -> None:
    with _LIVE_LOCK:
        labs = list(_LIVE.values())
    for lab in labs:
        try:
            lab.close()
        except Exception as exc:  # noqa: BLE001 - best effort at exit
            print(f"lab clean-up failed: {exc}", file=sys.stderr)


def _on_signal(signum: int, _frame: object) -> None:
    # Unwind like ^C: finally blocks and fixtures run, then atexit.
    raise KeyboardInterrupt(f"signal {signum}")


def _install_safety_net() -> None:
    global _NET_INSTALLED
    if _NET_INSTALLED:
        return
    _NET_INSTALLED = True
    atexit.register(_close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


def _drop_etcd_data(workdir: Path) -> None:
    """Keep a failed lab's logs and captures, not its etcd data dirs (64 MB of WAL each)."""
    for path in workdir.glob("etcd-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def sweep_stale() -> list[str]:
    """Remove namespaces (and kill their processes, by PID) left by a lab run that died, and
    the etcd data (64 MB of WAL) of its work directory."""
    removed = []
    for name in netns.listing():
        m = NAME_RE.match(name)
        if not m or procs.alive(int(m.group(1))):
            continue
        procs.kill(netns.pids_in(name))
        netns.delete(name)
        removed.append(name)
    for workdir in Path(tempfile.gettempdir()).glob("link-lab-lk*"):
        m = NAME_RE.match(workdir.name[len("link-lab-"):])
        if m and not procs.alive(int(m.group(1))):
            _drop_etcd_data(workdir)
    return removed


class Lab:
    def __init__(self, hosts: int = 3, agent_env: dict[str, str] | None = None, workdir: str | None = None) -> None:
        if not 1 <= hosts <= 20:
            raise ValueError("1..20 hosts")
        self.prefix = f"lk{os.getpid()}-{secrets.token_hex(2)}-"
        self.n_hosts = hosts
        self.agent_env = {**LAB_AGENT_ENV, **(agent_env or {})}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"link-lab-{self.prefix}"))
        self.bridge_ns = self.prefix + "br"
        self.client_ns = self.prefix + "cl"
        self.hosts: list[Host] = []
        self.etcd = Etcd(self.bridge_ns, self.workdir)
        self.captures: list[Capture] = []
        self.agents: list[Agent] = []
        self._namespaces: list[str] = []
        self._closed = False

    # ------------------------------------------------------------ building
    def _add_ns(self, name: str) -> None:
        self._namespaces.append(name)  # before creating: a half-made lab is still cleaned
        netns.add(name)
        netns.ip(name, "link", "set", "lo", "up")

    def _plug(self, ns: str, port: str, ip_cidr: str, ip6_cidr: str, mac: str) -> None:
        """A veth pair: `port` on br0 in the bridge namespace, `eth1` in `ns`."""
        netns.ip(self.bridge_ns, "link", "add", port, "type", "veth", "peer", "name", IFACE, "netns", ns)
        netns.ip(self.bridge_ns, "link", "set", port, "master", "br0", "up")
        netns.ip(ns, "link", "set", IFACE, "address", mac)
        netns.ip(ns, "addr", "add", ip_cidr, "dev", IFACE)
        netns.ip(ns, "addr", "add", ip6_cidr, "dev", IFACE, "nodad")
        netns.ip(ns, "link", "set", IFACE, "up")

    def up(self) -> "Lab":
        _install_safety_net()
        sweep_stale()
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        try:
            self._add_ns(self.bridge_ns)
            netns.ip(self.bridge_ns, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
            netns.ip(self.bridge_ns, "addr", "add", f"{BRIDGE_IP}/24", "dev", "br0")
            netns.ip(self.bridge_ns, "link", "set", "br0", "up")
            for i in range(1, self.n_hosts + 1):
                host = Host(self, i, f"{self.prefix}h{i}", f"{SUBNET}.{10 + i}", host_mac(i))
                self._add_ns(host.ns)
                self._plug(host.ns, f"vh{i}", f"{host.ip}/24", f"{SUBNET6}{10 + i}/64", host.mac)
                host.state_dir.mkdir(parents=True, exist_ok=True)
                self.hosts.append(host)
            self._add_ns(self.client_ns)
            self._plug(self.client_ns, "vcl", f"{CLIENT_IP}/24", f"{SUBNET6}100/64", CLIENT_MAC)
            netns.exec_in(self.client_ns, "sysctl", "-q", "-w", "net.ipv4.conf.all.arp_accept=1",
                          f"net.ipv4.conf.{IFACE}.arp_accept=1")
            self.etcd.start()
        except BaseException:
            self.close(keep_workdir=True)  # etcd's log says why it did not start
            raise
        return self

    def agent_env_for(self, host: Host, extra: dict[str, str]) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            "PYTHONUNBUFFERED": "1",
            "INTERFACE": IFACE,
            "HOSTNAME": host.name,
            "ETCD_HOSTS": ETCD_URL,
            "STATE_DIR": str(host.state_dir),
            "PORT": str(AGENT_PORT),
            **self.agent_env,
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def start_agents(self, hosts: Iterable[Host] | None = None, timeout: float = 30.0, **env: str) -> list[Agent]:
        """Start agents (in parallel) and wait until each answers its API."""
        chosen = list(self.hosts if hosts is None else hosts)
        agents = [h.start_agent(**env) for h in chosen]
        for agent in agents:
            agent.wait_ready(timeout)
        return agents

    # ------------------------------------------------------------ looking
    def host(self, key: int | str) -> Host:
        if isinstance(key, int):
            return self.hosts[key - 1]
        for h in self.hosts:
            if key in (h.name, h.ns, h.mac):
                return h
        raise KeyError(key)

    def bound(self, vip: str) -> list[str]:
        """Names of the hosts that have `vip` on eth1 now."""
        return [h.name for h in self.hosts if h.has(vip)]

    def holder(self, vip: str, exclude: Iterable[str] = ()) -> str | None:
        """The single host (other than `exclude`) that has the VIP bound, else None."""
        names = [n for n in self.bound(vip) if n not in set(exclude)]
        return names[0] if len(names) == 1 else None

    def neigh(self, vip: str) -> str | None:
        """The client's neighbour entry (MAC) for `vip`, if it has a link-layer address."""
        out = netns.ip(self.client_ns, "-j", "neigh", "show", "to", vip.split("/")[0], "dev", IFACE).stdout
        for entry in json.loads(out or "[]"):
            if entry.get("lladdr"):
                return entry["lladdr"].lower()
        return None

    def neigh_host(self, vip: str) -> str | None:
        mac = self.neigh(vip)
        return next((h.name for h in self.hosts if h.mac == mac), None) if mac else None

    def capture(self, name: str = "client-arp", bpf: str = "arp") -> Capture:
        """A capture on the client's eth1 (ARP unless `bpf` says otherwise), started (listening)
        when returned."""
        cap = Capture(self.client_ns, IFACE, str(self.workdir / f"{name}.pcap"), str(self.workdir / f"{name}.tcpdump.log"),
                      bpf)
        self.captures.append(cap)
        return cap.start()

    def client_ping(self, ip: str, timeout: int = 1) -> bool:
        return netns.exec_in(self.client_ns, "ping", "-n", "-c", "1", "-W", str(timeout), ip.split("/")[0],
                             timeout=timeout + 5, check=False).returncode == 0

    def logs(self, lines: int = 80) -> str:
        parts = []
        for h in self.hosts:
            parts.append(f"--- {h.log_path} (last {lines} lines) ---\n{_tail(h.log_path, lines)}")
        parts.append(f"--- {self.etcd.log_path} ---\n{_tail(self.etcd.log_path, 20)}")
        return "\n".join(parts)

    # ------------------------------------------------------------ VIPs through the agents' API
    def running_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.agent is not None and h.agent.running()]

    def add_vip(self, vip: str, hosts: Iterable[Host] | None = None) -> dict[str, str]:
        """POST the VIP to each agent (all running ones by default): {host name: vip id}."""
        ids = {}
        for h in list(hosts) if hosts is not None else self.running_hosts():
            resp = h.api("POST", "/ips", {"ip": vip})
            if resp.status != 201 or not isinstance(resp.body, dict) or "id" not in resp.body:
                raise AssertionError(f"POST /ips {vip} on {h.name}: {resp}")
            ids[h.name] = resp.body["id"]
        return ids

    def ip_object(self, name: str, vip_id: str) -> dict:
        resp = self.host(name).api("GET", f"/ips/{vip_id}")
        if resp.status != 200:
            raise AssertionError(f"GET /ips/{vip_id} on {name}: {resp}")
        return resp.body["ip"]

    def ip_objects(self, ids: dict[str, str]) -> dict[str, dict]:
        return {name: self.ip_object(name, vip_id) for name, vip_id in ids.items()}

    def agreement(self, vip: str, ids: dict[str, str], dead: Iterable[str] = (), lab_etcd: bool = True) -> str | None:
        """The holder's name when everything agrees, else None.

        Agreement: exactly one host (leaving out the `dead` ones, whose address is left on a
        downed link) has the VIP bound; its API says ACTIVATED, every other host of `ids` says
        STANDBY; each of them names it as holder; the etcd lock key holds its name.
        """
        bound = [name for name in self.bound(vip) if name not in set(dead)]
        if len(bound) != 1:
            return None
        holder = bound[0]
        for name, obj in self.ip_objects(ids).items():
            want = "ACTIVATED" if name == holder else "STANDBY"
            if obj.get("ip") != vip or obj.get("status") != want or obj.get("holder") != holder:
                return None
        if not lab_etcd:  # the agents use another etcd (a cluster, TLS) than the lab's own
            return holder
        return holder if self.etcd.get(lock_key(vip)) == holder else None

    def explain(self, vip: str, ids: dict[str, str]) -> str:
        """What each host says about the VIP (for failure messages)."""
        lines = [f"bound on: {self.bound(vip)}; etcd lock: {self.etcd.get(lock_key(vip))!r}; client neigh: {self.neigh(vip)}"]
        for name, vip_id in ids.items():
            try:
                obj = self.ip_object(name, vip_id)
                lines.append(f"  {name}: status={obj.get('status')} holder={obj.get('holder')} worker={obj.get('worker')}")
            except Exception as exc:  # noqa: BLE001
                lines.append(f"  {name}: {exc}")
        return "\n".join(lines)

    def wait_agreement(self, vip: str, ids: dict[str, str], timeout: float = 10.0, dead: Iterable[str] = (),
                       lab_etcd: bool = True) -> str:
        try:
            return wait_until(lambda: self.agreement(vip, ids, dead, lab_etcd), timeout, 0.05, f"one agreed holder of {vip}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.explain(vip, ids)}") from None

    # ------------------------------------------------------------ cleaning
    def close(self, keep_workdir: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []

        def attempt(step: Callable[[], object]) -> None:
            # Every step runs even when an earlier one failed: namespaces go in any case.
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - reported after the other steps
                errors.append(exc)

        try:
            for cap in self.captures:
                attempt(cap.stop)
            for agent in self.agents:
                attempt(lambda agent=agent: agent.stop(timeout=5.0))
            attempt(self.etcd.stop)
            # Anything still inside our namespaces (a worker that outlived its agent, an etcd
            # added by a test...): by PID, found through the namespace it lives in.
            attempt(lambda: procs.terminate([p for ns in self._namespaces for p in netns.pids_in(ns)], grace=2.0))
            for ns in reversed(self._namespaces):
                attempt(lambda ns=ns: netns.delete(ns))
            if errors:
                raise RuntimeError(f"lab clean-up: {len(errors)} step(s) failed, first: {errors[0]!r}") from errors[0]
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(id(self), None)
            if keep_workdir:
                _drop_etcd_data(self.workdir)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.close()
