"""The counts behind scripts/test.sh's closing line `N passed, N failed, N skipped`.

As a pytest plugin (`pytest -p tests.run_counts`), with LINK_TEST_COUNTS naming a file: at the
end of the run, pytest's own counts (those of its last line) are appended to that file as one
JSON line, with the run's exit status and LINK_TEST_LABEL. Without LINK_TEST_COUNTS it does
nothing.

As a program, `python3 -m tests.run_counts FILE --check LABEL STATUS` records a check of the
command that is not a pytest run (the strict mypy pass): one passed when STATUS is 0, else one
failed, in the same file.

As a program (`python3 -m tests.run_counts FILE [STATUS]`): the closing line over every run of
the file. Errors (setup, teardown, collection) count as failed, expected failures (xfail) as
skipped, unexpected passes as passed. A run that exited non-zero without counting a failure
(no test collected, an internal error, killed before its summary) counts as one failure, and
so does a command whose own STATUS is non-zero with no failure counted (the install failed):
the line never reads `0 failed` for a command that failed. Standard library only: it runs
before the virtualenv exists.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pytest
    from _pytest.terminal import TerminalReporter

# pytest's categories, as its summary line names them.
CATEGORIES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def pytest_terminal_summary(terminalreporter: TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    path = os.environ.get("LINK_TEST_COUNTS")
    if not path:
        return
    counts: dict[str, Any] = {
        # As pytest's own summary line: reports that do not count towards it are left out.
        key: sum(1 for report in terminalreporter.stats.get(key, []) if getattr(report, "count_towards_summary", True))
        for key in CATEGORIES
    }
    counts.update(label=os.environ.get("LINK_TEST_LABEL", "pytest"), exitstatus=int(exitstatus))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(counts) + "\n")


def total(runs: list[dict[str, Any]], status: int = 0) -> tuple[dict[str, int], list[str]]:
    """The whole command's passed, failed and skipped, and notes on failures counted without a test."""
    out = {"passed": 0, "failed": 0, "skipped": 0}
    notes = []
    for run in runs:
        n = {key: int(run.get(key, 0)) for key in CATEGORIES}
        failed = n["failed"] + n["error"]
        if run.get("exitstatus", 0) != 0 and failed == 0:
            failed = 1
            notes.append(f"{run.get('label', 'pytest')} exited with {run.get('exitstatus')} without a failed test: "
                         "counted as 1 failed")
        out["passed"] += n["passed"] + n["xpassed"]
        out["failed"] += failed
        out["skipped"] += n["skipped"] + n["xfailed"]
    if status != 0 and out["failed"] == 0:
        out["failed"] = 1
        notes.append(f"the command failed (status {status}) outside of any test: counted as 1 failed")
    return out, notes


def closing_line(counts: dict[str, int]) -> str:
    line = f"{counts['passed']} passed, {counts['failed']} failed"
    return line + (f", {counts['skipped']} skipped" if counts["skipped"] else "")


def record_check(path: Path, label: str, status: int) -> None:
    """One check that is not a pytest run, counted as one test: passed if `status` is 0."""
    run = {"passed": int(status == 0), "failed": int(status != 0), "label": label, "exitstatus": status}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(run) + "\n")


def read_runs(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "--check":
        record_check(Path(argv[0]), argv[2], int(argv[3]))
        return 0
    if len(argv) not in (1, 2):
        print("usage: python3 -m tests.run_counts FILE [STATUS] | FILE --check LABEL STATUS", file=sys.stderr)
        return 2
    counts, notes = total(read_runs(Path(argv[0])), int(argv[1]) if len(argv) == 2 else 0)
    for note in notes:
        print(f"test.sh: {note}")
    print(closing_line(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
