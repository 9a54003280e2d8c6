"""What the test command (scripts/test.sh) says: the counts behind its closing line
(tests/run_counts.py, as a pytest plugin on real pytest runs) and the chaos run's summary at
the end of pytest's output, also when the run passed (tests/chaos/conftest.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.chaos.conftest import summary_lines
from tests.run_counts import closing_line, record_check, total

REPO = Path(__file__).resolve().parents[2]

MIXED = '''
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup fails")

def test_passes():
    pass

def test_fails():
    assert False

def test_skipped():
    pytest.skip("not here")

def test_setup_error(broken):
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="known, but passes")
def test_xpass():
    pass
'''


def pytest_run(tmp_path: Path, source: str, counts: Path, *plugins: str) -> subprocess.CompletedProcess:
    """A real pytest run of `source`, outside this repository's configuration."""
    (tmp_path / "test_sample.py").write_text(source)
    # No plugin of this environment but those named: the counts are those of the sample alone.
    env = {**os.environ, "PYTHONPATH": str(REPO), "LINK_TEST_COUNTS": str(counts), "LINK_TEST_LABEL": "sample run",
           "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path)]
    for plugin in ("tests.run_counts", *plugins):
        argv += ["-p", plugin]
    return subprocess.run([*argv, str(tmp_path / "test_sample.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def summarize(counts: Path, status: int = 0) -> list[str]:
    """`python3 -m tests.run_counts FILE STATUS`, as test.sh runs it: its output lines."""
    proc = subprocess.run([sys.executable, "-m", "tests.run_counts", str(counts), str(status)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.splitlines()


def test_a_run_is_counted_as_pytest_counts_it(tmp_path: Path) -> None:
    counts = tmp_path / "counts.jsonl"
    proc = pytest_run(tmp_path, MIXED, counts)
    assert proc.returncode == 1, proc.stdout
    [run] = [json.loads(line) for line in counts.read_text().splitlines()]
    assert run == {"passed": 1, "failed": 1, "error": 1, "skipped": 1, "xfailed": 1, "xpassed": 1,
                   "label": "sample run", "exitstatus": 1}
    # pytest's own last line says the same.
    last = proc.stdout.strip().splitlines()[-1]
    for word in ("1 failed", "1 passed", "1 skipped", "1 xfailed", "1 xpassed", "1 error"):
        assert word in last, last
    # Errors are failures, xfail is skipped, xpass is passed: the closing line is the last line.
    assert summarize(counts) == ["2 passed, 2 failed, 2 skipped"]


def test_runs_add_up_and_no_test_collected_is_a_failure(tmp_path: Path) -> None:
    counts = tmp_path / "counts.jsonl"
    assert pytest_run(tmp_path, "def test_one():\n    pass\n\ndef test_two():\n    pass\n", counts).returncode == 0
    assert summarize(counts) == ["2 passed, 0 failed"]
    # A second run that collects nothing: pytest exits 5, and that is one failure.
    assert pytest_run(tmp_path, "x = 1\n", counts).returncode == 5
    lines = summarize(counts, 5)
    assert lines[-1] == "2 passed, 1 failed", lines
    assert "sample run exited with 5 without a failed test" in lines[0]


def test_a_failed_command_never_reads_zero_failed() -> None:
    # The install failed: no pytest ran at all.
    assert closing_line(total([], 1)[0]) == "0 passed, 1 failed"
    # pytest killed before its summary: an earlier run's counts, and the command's status.
    runs = [{"passed": 5, "skipped": 2, "exitstatus": 0}]
    assert closing_line(total(runs, 137)[0]) == "5 passed, 1 failed, 2 skipped"
    # Failures counted already: nothing is added.
    runs.append({"passed": 1, "failed": 2, "exitstatus": 1})
    assert closing_line(total(runs, 1)[0]) == "6 passed, 2 failed, 2 skipped"
    assert closing_line(total(runs[:1], 0)[0]) == "5 passed, 0 failed, 2 skipped"


SUMMARY = {
    "seed": 424242, "seconds": 151.3, "faults": {"kill_worker": 4, "etcd_down": 1},
    "observer": {"samples": 9000, "longest_step_s": 0.021}, "gaps": 6, "longest_gap_s": 1.234,
    "longest_gap_with_a_candidate_s": 0.456, "doubles": 2, "longest_double_s": 0.078,
    "longest_double_while_etcd_reachable_s": 0.012, "bounds_s": {"gap": 2.5, "double": 1.0, "converge_after_etcd": 3.5},
    "api_calls": {"valid": 30, "invalid": 12, "statuses": {"invalid 400": 12, "valid 201": 30}}, "violations": 0,
}


def test_the_chaos_summary_is_printed_when_the_run_passes(tmp_path: Path) -> None:
    source = f"def test_chaos_run(chaos_report):\n    chaos_report({SUMMARY!r})\n"
    proc = pytest_run(tmp_path, source, tmp_path / "counts.jsonl", "tests.chaos.conftest")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "chaos summary" in line)
    shown = lines[start + 1:start + 1 + len(summary_lines(SUMMARY))]
    assert shown == [f"chaos: {line}" for line in summary_lines(SUMMARY)], proc.stdout
    text = "\n".join(shown)
    for words in ("seed 424242", "--chaos-seed 424242", "kill_worker 4", "etcd_down 1", "longest gap 1.234 s",
                  "longest double 0.078 s", "30 valid, 12 invalid", "0 violation(s)"):
        assert words in text, text
    assert "1 passed" in lines[-1]  # pytest's own last line comes after it


def test_a_chaos_run_that_failed_to_set_up_still_shows_its_seed() -> None:
    assert summary_lines({"seed": 7, "setup": "failed"}) == [
        "seed 7 (the same schedule again: --chaos-seed 7 or LINK_CHAOS_SEED=7)", "no summary: setup failed"]


def test_every_pytest_run_of_the_test_command_feeds_the_closing_line() -> None:
    for script in ("scripts/test.sh", "scripts/test-debian-libs.sh"):
        runs = [line for line in (REPO / script).read_text().splitlines()
                if " -m pytest " in line and not line.lstrip().startswith("#")]
        assert runs and all("-p tests.run_counts" in line for line in runs), (script, runs)


def test_a_check_outside_pytest_counts_as_one_test(tmp_path: Path) -> None:
    counts = tmp_path / "counts.jsonl"
    # As test.sh records its mypy phase: a program run, not a function call.
    subprocess.run([sys.executable, "-m", "tests.run_counts", str(counts), "--check", "mypy (strict) on link/", "0"],
                   cwd=REPO, check=True, timeout=60)
    assert summarize(counts) == ["1 passed, 0 failed"]
    record_check(counts, "mypy (strict) on link/", 1)
    # The command stops after a failed check: its status is the check's, and no note is added.
    assert summarize(counts, 1) == ["1 passed, 1 failed"]


def test_the_test_command_type_checks_link_before_any_test_and_counts_it() -> None:
    lines = [line.strip() for line in (REPO / "scripts/test.sh").read_text().splitlines()
             if not line.lstrip().startswith("#")]
    mypy = lines.index(".venv/bin/python -m mypy link </dev/null")
    pytest_run = next(i for i, line in enumerate(lines) if " -m pytest " in line)
    assert mypy < pytest_run
    following = lines[mypy:pytest_run]
    assert any("tests.run_counts" in line and "--check" in line for line in following), following
    assert '[ "$rc" -eq 0 ] || exit "$rc"' in following, following


UNTYPED = '''
def double(value):
    return value * 2
'''


def test_the_type_check_is_strict(tmp_path: Path) -> None:
    # mypy.ini as the test command reads it: a function without annotations is an error
    # (mypy's default, not strict, would let it pass).
    python = REPO / ".venv/bin/python"
    assert python.exists(), "scripts/install.sh makes the virtualenv that has mypy"
    source = tmp_path / "untyped.py"
    source.write_text(UNTYPED)
    proc = subprocess.run([str(python), "-m", "mypy", "--config-file", str(REPO / "mypy.ini"), "--cache-dir",
                           str(tmp_path / "cache"), str(source)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "untyped.py:2: error: Function is missing a type annotation  [no-untyped-def]" in proc.stdout, proc.stdout
