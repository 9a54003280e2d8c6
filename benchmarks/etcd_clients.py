"""What keeping one lease alive costs a worker, by etcd client: link's gRPC adapter (etcd3's
stubs, one keepalive stream and one watch stream) against a plain HTTP/1.1 client of etcd's
JSON gateway (standard library, no thread), at link's default cadence (a 2 s lease refreshed
every 667 ms).

    .venv/bin/python -m benchmarks.etcd_clients [--clients 40] [--window 60]

N client processes are forked from a parent that imported everything first (as the supervisor
does); each makes its own client after the fork, grants a lease, opens a watch and refreshes
the lease on the tick. Measured over the window: CPU of the clients and of etcd (psutil),
and one client's USS. The gRPC client runs on Debian's libraries and on the virtualenv's,
the HTTP client on both too. etcd is a private one-member instance on 127.0.0.1 (ports 23790
and 23800, a temporary data directory), stopped by PID at the end. Results in
benchmarks/results/etcd_clients.json.

This is the measurement behind BENCHMARKS.md's "where the idle CPU goes".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import runtime

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "results" / "etcd_clients.json"
CLIENT_URL, PEER_URL = "http://127.0.0.1:23790", "http://127.0.0.1:23800"
TICK = 2 / 3  # link's default: a 2 s lease, three refreshes per lease

# Run by each runtime's interpreter: forks the clients, measures, prints one JSON line.
CHILD = r'''
import json, os, socket, sys, time, http.client
sys.path.insert(0, REPO)
import psutil
kind, n, window, tick = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
from link.config import EtcdEndpoint
from link.etcd.grpc_client import GrpcEtcd, quiet_grpc_polling

def grpc_client():
    quiet_grpc_polling()  # as GrpcEtcd.from_config does in a worker, after the fork
    etcd = GrpcEtcd([EtcdEndpoint("127.0.0.1", 23790, False)], tick)
    lease, _ = etcd.grant_lease(2)
    etcd.watch(f"/bench/{os.getpid()}", lambda: None)
    return lambda: etcd.keepalive(lease)

def http_client():
    conn = http.client.HTTPConnection("127.0.0.1", 23790, timeout=tick)
    def post(path, body):
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())
    lease = int(post("/v3/lease/grant", {"TTL": 2})["ID"])
    watch = socket.create_connection(("127.0.0.1", 23790))  # a watch stream, idle as a worker's is
    body = json.dumps({"create_request": {"key": "L2JlbmNo"}}).encode()
    watch.sendall(b"POST /v3/watch HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    def refresh():
        if int(post("/v3/lease/keepalive", {"ID": lease})["result"]["TTL"]) <= 0:
            raise RuntimeError("lease expired")
    return refresh

make = grpc_client if kind == "grpc" else http_client
kids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        try:
            refresh = make()
            deadline = time.monotonic() + window + 15
            due = time.monotonic()
            while time.monotonic() < deadline:  # bounded by the window
                due += tick
                time.sleep(max(0.0, due - time.monotonic()))
                refresh()
        finally:
            os._exit(0)
    kids.append(pid)
try:
    time.sleep(5)  # all connected, leases granted
    procs = [psutil.Process(p) for p in kids]
    etcd = psutil.Process(int(os.environ["ETCD_PID"]))
    cpu = lambda p: sum(p.cpu_times()[:2])
    c0, e0, t0 = sum(cpu(p) for p in procs), cpu(etcd), time.monotonic()
    time.sleep(window)
    c1, e1, t1 = sum(cpu(p) for p in procs), cpu(etcd), time.monotonic()
    alive = sum(1 for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    uss = procs[0].memory_full_info().uss / 2**20
    print(json.dumps({"clients": n, "alive_at_end": alive, "window_s": round(t1 - t0, 1),
                      "client_cpu_pct_each": 100 * (c1 - c0) / (t1 - t0) / n,
                      "etcd_cpu_pct_per_client": 100 * (e1 - e0) / (t1 - t0) / n, "client_uss_mib": uss}))
finally:
    for pid in kids:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for pid in kids:
        os.waitpid(pid, 0)
'''


def start_etcd(data: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["/usr/bin/etcd", "--data-dir", data, "--listen-client-urls", CLIENT_URL, "--advertise-client-urls", CLIENT_URL,
         "--listen-peer-urls", PEER_URL, "--initial-advertise-peer-urls", PEER_URL,
         "--initial-cluster", f"default={PEER_URL}", "--heartbeat-interval", "50", "--election-timeout", "250",
         "--log-level", "warn", "--logger", "zap"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import urllib.request
    for _ in range(100):  # bounded: 10 s
        try:
            with urllib.request.urlopen(f"{CLIENT_URL}/health", timeout=1) as resp:
                if json.loads(resp.read()).get("health") == "true":
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the benchmark's etcd did not become healthy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    data = tempfile.mkdtemp(prefix="link-bench-etcd-")
    etcd = start_etcd(data)
    results: dict = {"clients": args.clients, "window_s": args.window, "tick_s": TICK, "lease_s": 2, "runs": {}}
    try:
        for rt in runtime.RUNTIMES:
            if runtime.unavailable(rt):
                results["runs"][rt] = {"skipped": runtime.unavailable(rt)}
                continue
            results.setdefault("libraries", {})[rt] = runtime.describe(rt)
            for kind in ("grpc", "http"):
                code = CHILD.replace("REPO", repr(str(REPO)))
                done = subprocess.run([runtime.python_of(rt), "-s", "-c", code, kind, str(args.clients), str(args.window),
                                       str(TICK)], capture_output=True, text=True, timeout=args.window + 120,
                                      env={**os.environ, "ETCD_PID": str(etcd.pid)})
                line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
                results["runs"][f"{kind} on {rt}"] = json.loads(line) if done.returncode == 0 and line else {
                    "error": done.stderr.strip()[-500:]}
                print(f"{kind} on {rt}: {results['runs'][f'{kind} on {rt}']}", file=sys.stderr)
    finally:
        etcd.send_signal(signal.SIGTERM)
        try:
            etcd.wait(10)
        except subprocess.TimeoutExpired:
            etcd.kill()
            etcd.wait(5)
        shutil.rmtree(data, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
