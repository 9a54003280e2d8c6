"""link's benchmarks, one command: failover against keepalived, scale, API latency.

    .venv/bin/python -m benchmarks.run            # everything (about 45 minutes)
    .venv/bin/python -m benchmarks.run --quick    # fewer repetitions, smaller counts
    .venv/bin/python -m benchmarks.run --only scale --scale-counts 10,100,300   # re-run a part
    .venv/bin/python -m benchmarks.run --smoke --output /tmp/x.json             # CI: is it well formed

Parts (--only, repeatable; default all):
  failover  link (default 2 s lease, tuned 1 s lease) and keepalived (advert_int 1 s, and
            0.1 s with VRRPv3) in the same lab topology: host death, rejoin, orderly
            hand-over (SIGTERM), link's POST /ips/<id>/failover (benchmarks/failover.py);
  scale     N VIPs on each of 3 hosts: convergence, memory, idle CPU, etcd requests/s, a dead
            host's VIPs moving (benchmarks/scale.py);
  api       a real agent with many VIPs: GET /ips, POST /ips + DELETE (benchmarks/api_lab.py).

Writes the results (JSON) to --output (default benchmarks/results/bench.json; with --only,
the other parts already in that file are kept), the tables (markdown) next to it as
<output>.md, and the plots (PNG, matplotlib) next to it. Needs root (network namespaces);
keepalived comes from Debian's package (apt-get install -y keepalived), its part is skipped
and said so when it is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from link import __version__

from . import api_lab, failover, keepalived, runtime, scale
from .plots import plots
from .report import tables, update_document

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "bench.json"
DOCUMENT = REPO / "BENCHMARKS.md"
PARTS = ("failover", "scale", "api")
SCHEMA = 1

PROFILES = {
    # failover: repetitions and subjects; scale: VIPs per host (a fresh lab each), then a ramp
    # (start, stop, step) in one lab up to where it breaks, the idle window and warm-up (s);
    # api: the VIP counts on one host, GET /ips requests and POST+DELETE pairs at each.
    # compare: VIPs per host measured again with agents on the other runtime's libraries.
    "full":  dict(runs=20, subjects=None, counts=[10, 100, 300], ramp=(150, 300, 50), compare=[10, 100],
                  window=60.0, warmup=5.0, api_levels=[100, 200, 300, 400, 500], gets=200, pairs=50),
    "quick": dict(runs=5, subjects=None, counts=[10, 50], ramp=None, compare=[10], window=10.0, warmup=3.0,
                  api_levels=[50, 100], gets=50, pairs=10),
    "smoke": dict(runs=2, subjects=["tuned", "0.1 s"], counts=[2], ramp=None, compare=[], window=2.0, warmup=0.5,
                  api_levels=[3], gets=5, pairs=2),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    def out(*argv: str) -> str:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, cwd=REPO)
            return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
        except (OSError, subprocess.TimeoutExpired):
            return ""

    dirty = bool(out("git", "status", "--porcelain", "--", "link"))
    return {
        "link": __version__,
        "git": out("git", "rev-parse", "--short", "HEAD") + (" (link/ modified)" if dirty else ""),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "etcd": out("/usr/bin/etcd", "--version"),
        "keepalived": keepalived.version() if keepalived.available() is None else keepalived.available(),
        "agent_libraries": {name: runtime.describe(name) for name in runtime.RUNTIMES},
        "loadavg_at_start": os.getloadavg(),
    }


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="5 repetitions, 10 and 100 VIPs, API at 100 VIPs")
    mode.add_argument("--smoke", action="store_true", help="2 repetitions, tiny counts: checks the benchmark works")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--runs", type=int, help="failover repetitions per scenario and subject")
    parser.add_argument("--subjects", help="comma-separated parts of subject names (e.g. 'link,0.1 s')")
    parser.add_argument("--scale-counts", help="comma-separated VIP counts per host (e.g. 10,100,300)")
    parser.add_argument("--scale-window", type=float, help="idle measuring window, seconds")
    parser.add_argument("--scale-ramp", help="START:STOP:STEP VIPs per host, added in one lab until it breaks "
                        "(full: 150:300:50; 'none' to skip)")
    parser.add_argument("--agents", choices=runtime.RUNTIMES, default="debian",
                        help="the libraries the agents run on: Debian 12's own, as the .deb (default), or the "
                             "virtualenv's PyPI versions; the scale part also measures the other at a few counts")
    parser.add_argument("--api-levels", help="comma-separated VIP counts on one host for the API part (full: 100,...,500)")
    parser.add_argument("--output", type=Path, default=None, help=f"results JSON (default {DEFAULT_OUTPUT.relative_to(REPO)})")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--document", type=Path, default=None,
                        help="the markdown file whose generated blocks are rewritten (default: BENCHMARKS.md for a "
                             "full run to the default output, none otherwise)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.exit(2, "benchmarks.run: needs root (it builds network namespaces)\n")

    profile_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = dict(PROFILES[profile_name])
    if args.runs:
        profile["runs"] = args.runs
    if args.subjects:
        profile["subjects"] = [s.strip() for s in args.subjects.split(",") if s.strip()]
    if args.scale_counts:
        profile["counts"] = [int(x) for x in args.scale_counts.split(",")]
    if args.scale_window:
        profile["window"] = args.scale_window
    if args.scale_ramp:
        profile["ramp"] = None if args.scale_ramp == "none" else tuple(int(x) for x in args.scale_ramp.split(":"))
    if args.api_levels:
        profile["api_levels"] = [int(x) for x in args.api_levels.split(",")]
    parts = args.only or list(PARTS)
    if runtime.unavailable(args.agents):
        parser.exit(2, f"benchmarks.run: agents cannot run on {runtime.unavailable(args.agents)} "
                       "(bash scripts/bench.sh installs Debian's libraries)\n")
    other = next(r for r in runtime.RUNTIMES if r != args.agents)
    compare = (other, profile["compare"]) if profile["compare"] and not runtime.unavailable(other) else None
    output: Path = args.output or (DEFAULT_OUTPUT if not args.smoke else DEFAULT_OUTPUT.with_name("bench-smoke.json"))
    output.parent.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {}
    if args.only and output.exists():  # keep the other parts of an earlier run
        try:
            results = json.loads(output.read_text())
        except ValueError:
            results = {}
    started = time.monotonic()
    results.update({"schema": SCHEMA, "profile": profile_name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "environment": environment(), "agents": args.agents})
    results.setdefault("durations_s", {})
    if keepalived.available() is not None:
        log(f"keepalived part skipped: {keepalived.available()}")
    for part in parts:
        t = time.monotonic()
        log(f"--- {part} ({profile_name})")
        if part == "failover":
            with runtime.agents_on(args.agents):
                results["failover"] = failover.run(profile["runs"], profile["subjects"])
        elif part == "scale":
            def save(partial: dict) -> None:
                results["scale"] = partial
                output.write_text(json.dumps(results, indent=1, default=str) + "\n")

            results["scale"] = scale.run(profile["counts"], profile["window"], profile["warmup"], profile["ramp"],
                                         log, save, agents=args.agents, compare=compare)
        elif part == "api":
            with runtime.agents_on(args.agents):
                results["api"] = api_lab.run(profile["api_levels"], profile["gets"], profile["pairs"], log)
        results["durations_s"][part] = round(time.monotonic() - t, 1)
        output.write_text(json.dumps(results, indent=1, default=str) + "\n")  # after each part: nothing lost
    results["durations_s"]["this_run"] = round(time.monotonic() - started, 1)
    written = [] if args.no_plots else plots(results, output.parent, output.stem, log)
    results["plots"] = [os.path.relpath(p, output.parent) for p in written]
    output.write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = tables(results)
    output.with_suffix(".md").write_text(text)
    print(text)
    document = args.document or (DOCUMENT if profile_name == "full" and output == DEFAULT_OUTPUT else None)
    if document is not None:
        log(f"{document}: rewrote {', '.join(update_document(document, results, output.parent)) or 'nothing'}")
    log(f"results: {output}, tables: {output.with_suffix('.md')}, plots: {', '.join(written) or 'none'}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind: the labs clean up
    sys.exit(main())
