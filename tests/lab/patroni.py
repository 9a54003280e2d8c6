"""A real Patroni (Debian 12's `patroni` and `postgresql`) on a lab host, using the lab's etcd.

Each member runs in its host's namespace as the `postgres` user, with everything it writes
under the lab's work directory (`<workdir>/patroni-<host>`: its config, data dir, unix
sockets, log). It binds lab addresses only: the REST API on the host's address, PostgreSQL on
the host's address and the VIP (the namespace gets net.ipv4.ip_nonlocal_bind=1, so a replica's
postmaster listens on the VIP before it is bound there, as a vip-manager setup does). Short
timers (ttl 10, loop_wait 2, retry_timeout 3: Patroni's rule loop_wait + 2 * retry_timeout <=
ttl holds). Patroni is started and stopped by PID; its postmaster (Patroni detaches it) is
found through the data dir's postmaster.pid and stopped by PID too.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from . import netns, procs
from .lab import BRIDGE_IP, ETCD_CLIENT_PORT, SUBNET, Host, _tail
from .waiting import GiveUp, wait_until

PATRONI = "/usr/bin/patroni"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
API_PORT = 8008
SCOPE = "lab"
NAMESPACE = "/service"
LEADER_KEY = f"{NAMESPACE}/{SCOPE}/leader"  # Patroni's: /<namespace>/<scope>/leader, value = member name
TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 2, 3


def missing() -> str | None:
    """Why Patroni cannot run here (None: it can)."""
    for path in (PATRONI, str(PG_BIN / "postgres"), "/usr/bin/psql", "/usr/bin/setpriv"):
        if not os.path.exists(path):
            return f"{path} is missing (scripts/install.sh installs patroni and postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user (the postgresql package makes it)"
    return None


def _config(member: "Member", vip_address: str) -> str:
    # YAML written by hand (JSON is YAML): no yaml module needed in the test process.
    h = member.host
    return f"""scope: {SCOPE}
namespace: {NAMESPACE}
name: {h.name}
log: {{level: INFO}}
restapi: {{listen: "{h.ip}:{API_PORT}", connect_address: "{h.ip}:{API_PORT}"}}
etcd3: {{hosts: "{BRIDGE_IP}:{ETCD_CLIENT_PORT}", protocol: http}}
bootstrap:
  dcs:
    ttl: {TTL}
    loop_wait: {LOOP_WAIT}
    retry_timeout: {RETRY_TIMEOUT}
    postgresql: {{use_pg_rewind: false, use_slots: false}}
  initdb: [{{encoding: UTF8}}, no-sync]
  pg_hba:
    - local all all trust
    - host replication replicator {SUBNET}.0/24 trust
    - host all all {SUBNET}.0/24 trust
postgresql:
  listen: "{h.ip},{vip_address}:{PG_PORT}"
  connect_address: "{h.ip}:{PG_PORT}"
  data_dir: {member.data_dir}
  bin_dir: {PG_BIN}
  pgpass: {member.root}/pgpass
  use_unix_socket: true
  authentication:
    superuser: {{username: postgres, password: lab-superuser}}
    replication: {{username: replicator, password: lab-replicator}}
  parameters:
    unix_socket_directories: "{member.root}"
    max_connections: 20
    shared_buffers: 16MB
    fsync: "off"
    synchronous_commit: "off"
    full_page_writes: "off"
"""


class Member:
    """One Patroni member on a lab host."""

    def __init__(self, host: Host, vip_address: str) -> None:
        self.host = host
        self.root = host.lab.workdir / f"patroni-{host.name}"
        self.data_dir = self.root / "data"
        self.config = self.root / "patroni.yml"
        self.log_path = host.lab.workdir / f"patroni-{host.name}.log"
        self.vip_address = vip_address
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Member":
        user = pwd.getpwnam("postgres")
        # The postgres user must reach its directory: the lab's workdir is root's (0700).
        os.chmod(self.host.lab.workdir, 0o711)
        self.root.mkdir(mode=0o700, exist_ok=True)
        self.config.write_text(_config(self, self.vip_address))
        for path in (self.root, self.config):
            os.chown(path, user.pw_uid, user.pw_gid)
        netns.exec_in(self.host.ns, "sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": str(self.root),
               "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.host.ns, "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                 "--init-groups", PATRONI, str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True, cwd=str(self.root))
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def postmaster(self) -> int | None:
        """The postmaster's PID from its postmaster.pid, when that process still runs in this host."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if procs.alive(pid) and netns.holds(self.host.ns, pid) else None

    def postgres_pids(self) -> list[int]:
        """The postmaster and its backends (by PID)."""
        pid = self.postmaster()
        return [pid, *procs.descendants(pid)] if pid is not None else []

    def psql(self, address: str, sql: str, ns: str | None = None, timeout: float = 5.0) -> subprocess.CompletedProcess[str]:
        """`psql` (as root's client: trust in pg_hba) to `address` from `ns` (default: this host)."""
        return netns.exec_in(ns or self.host.ns, "psql", f"host={address} port={PG_PORT} user=postgres dbname=postgres "
                             f"connect_timeout={int(timeout)}", "-Atc", sql, timeout=timeout + 5, check=False)

    def role(self) -> str | None:
        """'primary', 'replica' (from PostgreSQL itself), or None when it does not answer."""
        out = self.psql(self.host.ip, "select pg_is_in_recovery()", timeout=2.0)
        if out.returncode != 0:
            return None
        return {"f": "primary", "t": "replica"}.get(out.stdout.strip())

    def kill(self, postgres: bool = True) -> list[int]:
        """SIGKILL Patroni, and its PostgreSQL with it unless `postgres` is False (their host
        dying, or Patroni alone): the leader key is left to expire with Patroni's lease.
        Returns the PIDs killed."""
        pids = ([self.proc.pid] if self.proc is not None and self.proc.poll() is None else [])
        pids += self.postgres_pids() if postgres else []
        procs.signal_pids(pids, signal.SIGSTOP)  # frozen first: none of them reacts to the others' death
        procs.kill(pids)
        if self.proc is not None:
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        return pids

    def stop(self) -> None:
        """Stop Patroni (SIGTERM: it stops its PostgreSQL), then whatever is left, by PID."""
        if self.proc is not None:
            procs.sigterm_and_wait(self.proc, 10.0)
            if self.proc.poll() is None:
                procs.kill([self.proc.pid])
        leftovers = self.postgres_pids()
        if leftovers:
            procs.terminate(leftovers, grace=3.0)

    def log(self, lines: int = 40) -> str:
        return f"--- {self.log_path} ---\n{_tail(self.log_path, lines)}"


def wait_primary(members: list[Member], timeout: float) -> Member:
    """The member whose PostgreSQL answers as primary (bounded wait)."""
    def primary() -> Member | None:
        for m in members:
            if m.proc is not None and m.proc.poll() is not None:
                raise GiveUp(f"patroni on {m.host.name} exited with {m.proc.returncode}\n{m.log()}")
        found = [m for m in members if m.role() == "primary"]
        return found[0] if len(found) == 1 else None
    found = wait_until(primary, timeout, 0.2, "one PostgreSQL primary")
    assert found is not None
    return found


def clean(members: list[Member]) -> None:
    for m in members:
        m.stop()
    for m in members:
        shutil.rmtree(m.root, ignore_errors=True)
