"""Debian's Prometheus server inside a lab namespace, scraping the lab's agents.

It listens on 127.0.0.1 of that namespace only (nothing outside the lab can reach it), keeps
its configuration, the scrape password (a 0600 file) and its storage under the lab's workdir,
and is started and stopped by PID. The lab's close() would also stop it (it terminates every
process left in its namespaces), but the owner stops it first.
"""
from __future__ import annotations

import json
import logging
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any, Iterable

from . import http, procs
from .waiting import GiveUp, wait_until

logger = logging.getLogger(__name__)

BINARY = "/usr/bin/prometheus"
PORT = 9090


class Prometheus:
    def __init__(self, ns: str, workdir: Path, targets: Iterable[str], rule_files: Iterable[Path],
                 username: str, password: str, interval: str = "1s", job: str = "link") -> None:
        self.ns = ns
        self.dir = workdir / "prometheus"
        self.targets = list(targets)
        self.rule_files = [str(Path(p).resolve()) for p in rule_files]
        self.username = username
        self.password = password
        self.interval = interval
        self.job = job
        self.log_path = self.dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        secret = self.dir / "scrape-password"
        secret.touch(mode=0o600)
        secret.write_text(self.password)
        # JSON is YAML: no YAML writer needed for Prometheus's configuration.
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval,
                       "scrape_timeout": self.interval},
            "rule_files": self.rule_files,
            "scrape_configs": [{
                "job_name": self.job,
                "basic_auth": {"username": self.username, "password_file": str(secret)},
                "static_configs": [{"targets": self.targets}],
            }],
        }
        path = self.dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self, timeout: float = 30.0) -> "Prometheus":
        config = self._write_config()
        argv = ["ip", "netns", "exec", self.ns, BINARY, f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{PORT}",
                "--log.level=warn"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
                                         start_new_session=True, cwd=str(self.dir))
        logger.info("prometheus started in %s (pid %d)", self.ns, self.proc.pid)

        def ready() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise GiveUp(f"prometheus exited:\n{self.log()}")
            return self.get("/-/ready").status == 200

        wait_until(ready, timeout, 0.1, "prometheus to be ready")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        procs.terminate([proc.pid], grace=5.0)
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            pass

    def log(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------ the HTTP API
    def get(self, path: str, timeout: float = 5.0) -> http.Response:
        return http.request(self.ns, "127.0.0.1", PORT, "GET", path, timeout=timeout)

    def _data(self, path: str) -> Any:
        resp = self.get(path)
        if resp.status != 200 or not isinstance(resp.body, dict) or resp.body.get("status") != "success":
            raise AssertionError(f"GET {path}: {resp}")
        return resp.body["data"]

    def query(self, expr: str) -> dict[frozenset, float]:
        """An instant vector: {frozenset of its labels' items: value}."""
        data = self._data("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert data["resultType"] == "vector", data
        return {frozenset(item["metric"].items()): float(item["value"][1]) for item in data["result"]}

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), each with its labels and state."""
        return list(self._data("/api/v1/alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._data("/api/v1/rules")["groups"] for rule in group["rules"]]

    def targets_health(self) -> dict[str, str]:
        """{target address: up/down/unknown}."""
        active = self._data("/api/v1/targets?state=active")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}
