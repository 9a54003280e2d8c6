"""The benchmark suite in smoke mode (2 repetitions, tiny counts): it runs to the end, cleans
up, and writes a well-formed result file, tables and plots. Behaviour, not timings: the
numbers themselves are for BENCHMARKS.md (python -m benchmarks.run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import lab_unavailable
from tests.lab import netns

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def _well_formed_stats(block: dict, where: str) -> None:
    assert block.get("n", 0) >= 1, f"{where}: no sample"
    assert 0 <= block["min"] <= block["median"] <= block["p95"] <= block["max"], f"{where}: {block}"


@pytest.fixture
def lab_usable() -> None:
    reason = lab_unavailable()
    if reason:
        if os.environ.get("LINK_LAB_REQUIRED") == "1":
            pytest.fail(f"LINK_LAB_REQUIRED=1 but {reason}")
        pytest.skip(reason)


def run_benchmark(argv: list[str], timeout: float) -> int:
    """`python -m <argv>` from the repository, bounded; fails the test on a non-zero exit. Its PID."""
    proc = subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # it unwinds: its labs clean up
        out, err = proc.communicate(timeout=60)
        pytest.fail(f"{argv[0]} took more than {timeout:g} s\n{err[-5000:]}")
    assert proc.returncode == 0, f"{argv[0]}: exit {proc.returncode}\n{out[-3000:]}\n{err[-5000:]}"
    return proc.pid


@pytest.mark.lab_timeout(420)
def test_smoke_run_writes_a_well_formed_result_file(lab_usable, tmp_path):
    output = tmp_path / "results" / "bench.json"
    document = tmp_path / "BENCHMARKS.md"
    document.write_text((REPO / "BENCHMARKS.md").read_text())
    pid = run_benchmark(["benchmarks.run", "--smoke", "--output", str(output), "--document", str(document)], 400)
    results = json.loads(output.read_text())

    assert results["schema"] == 1 and results["profile"] == "smoke"
    assert {"link", "cpus", "keepalived"} <= results["environment"].keys()
    # The agents ran on Debian's own libraries, the .deb's (scripts/install.sh installs them).
    assert results["agents"] == "debian" and results["scale"]["agents"] == "debian"
    debian = results["environment"]["agent_libraries"]["debian"]
    assert debian["python"].startswith("3.") and not any(str(v).startswith("missing") for v in debian.values()), debian

    subjects = results["failover"]["subjects"]
    link = subjects["link lease 1 s (tuned)"]
    assert link["errors"] == [], link["errors"]
    for scenario in ("host-death", "orderly", "api"):
        _well_formed_stats(link["summary"][scenario]["bound"], f"link {scenario}")
        assert len(link["samples"][scenario]["bound"]) == 2
        # The client's own capture saw the new holder announce the VIP after each fault.
        assert len(link["samples"][scenario]["garp"]) == 2, link["samples"][scenario]
    assert link["summary"]["rejoin"]["double"]["n"] == 2
    assert "keepalived" not in results["failover"], results["failover"].get("keepalived")  # it was not skipped
    ka = subjects["keepalived advert_int 0.1 s (VRRPv3)"]
    assert ka["errors"] == [], ka["errors"]
    for scenario in ("host-death", "orderly"):
        _well_formed_stats(ka["summary"][scenario]["bound"], f"keepalived {scenario}")
    assert "api" not in ka["summary"]

    count = results["scale"]["counts"]["2"]
    assert count["converged"] is True, count
    assert count["workers_running"] == 6
    _well_formed_stats(count["memory_mib"]["worker"]["uss"], "worker USS")
    assert count["idle"]["etcd_rps"]["messages_received"] > 0
    assert count["dead_host"]["moved"] == count["dead_host"]["vips_held"] >= 1

    api = results["api"]
    level = api["levels"]["3"]
    assert level["fits"] is True and level["errors"] == [] and api["largest_fit"] == 3, api
    for name in ("GET /ips", "POST /ips", "DELETE /ips/<id>", "POST /ips + DELETE"):
        _well_formed_stats(level["latency_ms"][name], name)

    tables = output.with_suffix(".md").read_text()
    assert "### Failover" in tables and "### Scale" in tables and "### API latency" in tables
    assert len(results["plots"]) == 2
    for plot in results["plots"]:
        assert (output.parent / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # BENCHMARKS.md's generated blocks now hold this run's tables; the rest is as it was.
    text = document.read_text()
    assert "link lease 1 s (tuned) | host-death | 2 |" in text
    assert f"Measured {results['when']} with `smoke` settings" in text
    for plot in results["plots"]:
        assert f"](results/{plot})" in text, plot
    # Every namespace of the benchmark's labs is gone (they carry its PID), with what ran in them.
    assert [ns for ns in netns.listing() if ns.startswith(f"lk{pid}-")] == []


@pytest.mark.lab_timeout(120)
def test_the_etcd_outage_benchmark_in_smoke_mode_writes_its_figures(lab_usable, tmp_path):
    """benchmarks/etcd_outage.py --smoke: one run of "etcd down" on link activate (about 15 s)."""
    output = tmp_path / "etcd_outage.json"
    document = tmp_path / "BENCHMARKS.md"
    document.write_text((REPO / "BENCHMARKS.md").read_text())
    pid = run_benchmark(["benchmarks.etcd_outage", "--smoke", "--output", str(output), "--document", str(document)], 100)
    results = json.loads(output.read_text())
    link = results["outage"]["subjects"]["link activate"]
    assert link["errors"] == [], link["errors"]
    down = link["summary"]["etcd-down"]
    for figure in ("double", "none", "client_elsewhere", "unanswered_longest"):
        _well_formed_stats(down[figure], f"etcd-down {figure}")
    # The client's probes reached the VIP: some answers came back (a broken prober gets none).
    assert 0 < down["answered_pct"]["max"] <= 100, down["answered_pct"]
    assert output.with_name("etcd_outage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = document.read_text()
    assert "| link activate | etcd-down | 1 |" in text and f"Measured {results['when']}" in text
    assert [ns for ns in netns.listing() if ns.startswith(f"lk{pid}-")] == []
