"""More etcd shapes for the lab: a three-member cluster, and one member speaking TLS with
client-certificate auth (certificates made by the test with openssl). All of them live in
the bridge namespace on extra addresses of br0, so only lab addresses are ever used."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import netns, procs
from .waiting import GiveUp, wait_until

ETCD_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "250", "--logger", "zap",
              "--log-outputs", "stderr", "--log-level", "warn"]


def _env() -> dict[str, str]:
    # A clean environment: ETCD_* variables of the caller must not change the flags.
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}


class Member:
    def __init__(self, ns: str, workdir: Path, name: str, ip: str, cluster: str, state: str, tls: list[str] | None = None) -> None:
        self.ns, self.name, self.ip = ns, name, ip
        self.data_dir = workdir / f"etcd-{name}"
        self.log_path = workdir / f"etcd-{name}.log"
        self.cluster, self.state, self.tls = cluster, state, tls or []
        self.scheme = "https" if tls else "http"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.ip}:2379"

    def start(self) -> None:
        peer = f"http://{self.ip}:2380"
        argv = ["ip", "netns", "exec", self.ns, "/usr/bin/etcd", "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.cluster, "--initial-cluster-state", self.state,
                "--initial-cluster-token", f"tok-{self.ns}", *ETCD_FLAGS, *self.tls]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_env(),
                                         start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            procs.kill([self.proc.pid])
            self.proc.wait(5)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            procs.terminate([proc.pid], grace=3.0)
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass


def _add_address(ns: str, ip: str) -> None:
    netns.ip(ns, "addr", "add", f"{ip}/24", "dev", "br0")


def _healthy(member: Member, extra: list[str] | None = None) -> bool:
    if not member.running():
        raise GiveUp(f"etcd {member.name} exited:\n{member.log_path.read_text(errors='replace')[-2000:]}")
    done = netns.exec_in(member.ns, "etcdctl", "--endpoints", member.url, "--dial-timeout", "1s",
                         "--command-timeout", "1s", *(extra or []), "endpoint", "health", timeout=5, check=False)
    return done.returncode == 0


class Cluster:
    """Three members on 198.51.100.2-4 in the bridge namespace."""

    def __init__(self, lab, ips: tuple[str, ...] = ("198.51.100.2", "198.51.100.3", "198.51.100.4")) -> None:
        cluster = ",".join(f"m{i}=http://{ip}:2380" for i, ip in enumerate(ips, 1))
        self.members = [Member(lab.bridge_ns, lab.workdir, f"m{i}", ip, cluster, "new") for i, ip in enumerate(ips, 1)]
        self.ns = lab.bridge_ns

    @property
    def urls(self) -> str:
        return ",".join(m.url for m in self.members)

    def start(self, timeout: float = 20.0) -> "Cluster":
        for member in self.members:
            _add_address(self.ns, member.ip)
            member.start()
        for member in self.members:
            wait_until(lambda m=member: _healthy(m), timeout, 0.1, f"etcd member {member.name} to be healthy")
        return self

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def make_certificates(directory: Path, server_ip: str) -> dict[str, Path]:
    """A CA, a server certificate for `server_ip`, a client certificate, and a second,
    unrelated CA (for the wrong-CA case). openssl only; everything inside `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    p = {name: directory / name for name in
         ("ca.key", "ca.pem", "other-ca.key", "other-ca.pem", "server.key", "server.csr", "server.pem",
          "client.key", "client.csr", "client.pem", "san.cnf")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=link-lab-{ca}",
                "-keyout", str(p[f"{ca}.key"]), "-out", str(p[f"{ca}.pem"]))
    p["san.cnf"].write_text(f"subjectAltName=IP:{server_ip}\nextendedKeyUsage=serverAuth,clientAuth\n")
    for who, cn in (("server", "etcd"), ("client", "link")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(p[f"{who}.key"]),
                "-out", str(p[f"{who}.csr"]))
        openssl("x509", "-req", "-in", str(p[f"{who}.csr"]), "-CA", str(p["ca.pem"]), "-CAkey", str(p["ca.key"]),
                "-CAcreateserial", "-days", "2", "-extfile", str(p["san.cnf"]), "-out", str(p[f"{who}.pem"]))
    return p


class TlsMember(Member):
    """One etcd member on `ip` that requires a client certificate signed by the lab CA."""

    def __init__(self, lab, ip: str = "198.51.100.5") -> None:
        self.certs = make_certificates(lab.workdir / "tls", ip)
        tls = ["--cert-file", str(self.certs["server.pem"]), "--key-file", str(self.certs["server.key"]),
               "--trusted-ca-file", str(self.certs["ca.pem"]), "--client-cert-auth"]
        super().__init__(lab.bridge_ns, lab.workdir, "tls", ip, f"tls=http://{ip}:2380", "new", tls)

    def start_healthy(self, timeout: float = 20.0) -> "TlsMember":
        _add_address(self.ns, self.ip)
        self.start()
        creds = ["--cacert", str(self.certs["ca.pem"]), "--cert", str(self.certs["client.pem"]),
                 "--key", str(self.certs["client.key"])]
        wait_until(lambda: _healthy(self, creds), timeout, 0.1, "the TLS etcd member to be healthy")
        return self
