"""The shipped Prometheus rules (packaging/prometheus/link-rules.yml) under Debian's promtool.

`promtool test rules` runs tests/prometheus/link-rules.test.yml: input series shaped like the
agents' GET /metrics, and for every alert the cases where it fires and where it must not.
The other tests keep that file and the rules honest: every alert is tested both ways, and
every metric the rules read is one the agent exports (a renamed metric would leave an alert
that never fires, which no promtool test with made-up series can notice).

promtool comes with Debian's `prometheus` package (scripts/install.sh installs it). Without it
these tests are skipped, except in CI (CI set) where they fail: there it must be installed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from link.api.metrics import render

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "packaging" / "prometheus" / "link-rules.yml"
RULE_TESTS = REPO / "tests" / "prometheus" / "link-rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if path is None:
        reason = "promtool is not installed (Debian package prometheus; scripts/install.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          cwd=REPO)


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(RULES)["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_shipped_rules(promtool):
    proc = _promtool(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout, proc.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool):
    proc = _promtool(promtool, "test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout


def test_the_promtool_tests_load_the_shipped_file_itself():
    files = [(RULE_TESTS.parent / name).resolve() for name in _load(RULE_TESTS)["rule_files"]]
    assert files == [RULES]


def test_every_alert_is_tested_firing_and_not_firing():
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts, "no alert in the rules"
    fired: set[str] = set()
    silent: set[str] = set()
    for case in _load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test") or []:
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - fired == set(), "alerts no test sees firing"
    assert alerts - silent == set(), "alerts no test sees staying silent"
    assert (fired | silent) - alerts == set(), "tests of alerts the rules do not have"


def test_every_recording_rule_is_checked_by_a_promql_test():
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    assert recorded
    queried = " ".join(check["expr"] for case in _load(RULE_TESTS)["tests"] for check in case.get("promql_expr_test") or [])
    assert {name for name in recorded if name not in queried} == set()


def _exported_names() -> set[str]:
    """Metric names in the agent's GET /metrics for one VIP with every kind of number."""
    answer = {"workers": 1, "vips": [{
        "id": "vip-1", "ip": "198.51.100.50/32", "status": "ACTIVATED", "since": 1.0, "restarts": 1,
        "metrics": {"transitions": {"elected": 1}, "announce_packets": 3,
                    "health": {"results": {"pass": 1, "fail": 1}, "count": 2, "seconds": 0.1},
                    "etcd": {"requests": {"txn": 1}, "seconds": {"txn": 0.01}, "errors": {"txn": {"unavailable": 1}},
                             "lease_renewals": 1, "lease_grants": 1},
                    "election": {"leaseless_lock_takeovers": 0}}}]}
    text = render(answer, "0", clock=lambda: 2.0).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_rules_read_only_metrics_and_labels_the_agent_exports():
    exported = _exported_names()
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    for rule in _rules():
        for name in re.findall(r"\b(link_[a-z_]+|link:[a-z_:]+)", rule["expr"]):
            assert name in exported | recorded, f"{rule.get('alert') or rule.get('record')} reads {name}, which nothing exports"
    # The labels the rules select on or group by are the exposition's (plus Prometheus's job and instance).
    labels = {"job", "instance", "id", "ip", "state", "kind", "method", "outcome", "event"}
    for rule in _rules():
        used = set(re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"]))
        used = {label.strip() for group in used for label in group.split(",")}
        used |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", rule["expr"]))
        assert used <= labels, f"{rule.get('alert') or rule.get('record')} uses labels {used - labels}"


def test_the_package_installs_the_rules_where_the_docs_say():
    installs = (REPO / "packaging" / "debian" / "link.install").read_text().split("\n")
    assert "packaging/prometheus/link-rules.yml usr/share/link/prometheus/" in installs
    shipped = "/usr/share/link/prometheus/link-rules.yml"
    for doc in ("README.md", "packaging/README.md", "packaging/debian/man/link-agent.8"):
        assert shipped in (REPO / doc).read_text().replace("\\-", "-"), f"{doc} does not name {shipped}"
