"""Latency of the HTTP API on loopback: p50/p99 of `GET /ips` and of `POST /ips` + `DELETE`
with 100 VIPs configured.

What is measured is the API process's own stack, as the agent runs it: the bottle app
(`make_app`) on waitress (the agent's thread count), the real `SupervisorClient` over a real
`multiprocessing.Pipe`, and, on the other end, a fake supervisor in a process of its own that
answers every request at once. The real supervisor would need etcd and network namespaces:
its own work (forking a worker on `add`, waiting for the worker to release the VIP on
`delete`) is not in these numbers. Each request opens a new connection to 127.0.0.1, as
link-client and curl do.

    python benchmarks/api_latency.py [--requests 500] [--vips 100]

Writes benchmarks/results/api_latency.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import platform
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout: `python benchmarks/api_latency.py`
    sys.path.insert(0, str(REPO))

import bottle  # noqa: E402
import waitress  # noqa: E402

from link import __version__  # noqa: E402
from link.api import make_app  # noqa: E402
from link.api.server import API_THREADS, SupervisorClient  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "api_latency.json"
NOTE = (
    "fake supervisor (a process answering over a real Pipe at once): the real supervisor needs "
    "etcd and network namespaces, and its own work (fork a worker on add, wait for the VIP's "
    "release on delete) is not included"
)


def fake_supervisor(conn: Connection) -> None:
    """Body of the fake supervisor process: one request at a time, as the real one's loop."""
    from tests.unit.api_fakes import FakeSupervisor

    logic = FakeSupervisor()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        request = {key: value for key, value in message.items() if key != "id"}
        conn.send({**logic(request), "id": message["id"]})


class Stack:
    """The API process's stack on 127.0.0.1, with the fake supervisor behind its Pipe."""

    def __init__(self) -> None:
        # spawn: the fake supervisor starts from a clean interpreter, holding only its Pipe end.
        ctx = multiprocessing.get_context("spawn")
        api_end, supervisor_end = ctx.Pipe()
        self.supervisor = ctx.Process(target=fake_supervisor, args=(supervisor_end,), name="fake-supervisor", daemon=True)
        self.supervisor.start()
        supervisor_end.close()
        self.client = SupervisorClient(api_end)
        self.client.start()
        self.server = waitress.create_server(
            make_app(self.client.call, version=__version__), host="127.0.0.1", port=0,
            threads=API_THREADS, clear_untrusted_proxy_headers=True, asyncore_use_poll=True,
        )
        self.port: int = self.server.effective_port  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)
        self.thread.start()

    def close(self) -> None:
        # Worker threads first: a task finishing after close() would write to the closed trigger.
        self.server.task_dispatcher.shutdown()  # type: ignore[union-attr]
        self.server.close()
        self.thread.join(5)
        self.supervisor.kill()
        self.supervisor.join(5)

    def request(self, method: str, path: str, body: object = None, expect: int = 200) -> tuple[float, Any]:
        """One request on a new connection: (seconds, decoded body); exits on an unexpected status."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        elapsed = time.perf_counter() - started
        if response.status != expect:
            sys.exit(f"api_latency: {method} {path} answered {response.status}, not {expect}: {raw[:200]!r}")
        return elapsed, json.loads(raw) if raw else None


def summary(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)

    def rank(p: float) -> float:  # nearest-rank percentile
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    return {
        "n": len(ordered),
        "p50_ms": round(rank(50), 3),
        "p99_ms": round(rank(99), 3),
        "mean_ms": round(sum(ordered) / len(ordered) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def measure(stack: Stack, requests: int, vips: int) -> dict[str, dict[str, float | int]]:
    for _ in range(20):  # warm-up: imports, thread start, first connections
        stack.request("GET", "/version")
    for n in range(vips):
        # Two documentation ranges: room for up to 508 VIPs, none of them routable.
        ip = f"198.51.100.{n + 1}" if n < 254 else f"203.0.113.{n - 253}"
        stack.request("POST", "/ips", {"ip": ip}, expect=201)
    _, listed = stack.request("GET", "/ips")
    if len(listed["ips"]) != vips:
        sys.exit(f"api_latency: {len(listed['ips'])} VIPs configured, not {vips}")

    get_ips = [stack.request("GET", "/ips")[0] for _ in range(requests)]

    post, delete, pair = [], [], []
    for n in range(requests):
        # The VIP added and removed is one the list does not hold, so the list stays at `vips`.
        ip = f"192.0.2.{n % 254 + 1}"
        added, created = stack.request("POST", "/ips", {"ip": ip}, expect=201)
        removed, _ = stack.request("DELETE", f"/ips/{created['id']}", expect=204)
        post.append(added)
        delete.append(removed)
        pair.append(added + removed)
    return {
        "GET /ips": summary(get_ips),
        "POST /ips": summary(post),
        "DELETE /ips/<id>": summary(delete),
        "POST /ips + DELETE": summary(pair),
    }


def markdown(results: dict[str, dict[str, float | int]], vips: int) -> str:
    lines = [
        f"API latency on 127.0.0.1, {vips} VIPs configured ({NOTE})",
        "",
        "| request | n | p50 (ms) | p99 (ms) | mean (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in results.items():
        lines.append(f"| `{name}` | {row['n']} | {row['p50_ms']} | {row['p99_ms']} | {row['mean_ms']} | {row['max_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500, help="requests of each kind (default 500)")
    parser.add_argument("--vips", type=int, default=100, help="VIPs configured while measuring (default 100, at most 508)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(REPO)})")
    args = parser.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 0 <= args.vips <= 508):
        parser.error("--requests must be 1..100000 and --vips 0..508")

    stack = Stack()
    try:
        results = measure(stack, args.requests, args.vips)
    finally:
        stack.close()
    report: dict[str, Any] = {
        "benchmark": "api_latency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "vips_configured": args.vips,
            "requests_per_kind": args.requests,
            "address": "127.0.0.1, a new connection per request",
            "api_threads": API_THREADS,
            "supervisor": NOTE,
        },
        "environment": {
            "link": __version__,
            "python": platform.python_version(),
            "bottle": bottle.__version__,
            "waitress": _version_of("waitress"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(results, args.vips))
    print(f"\nwritten to {args.output}")
    return 0


def _version_of(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
