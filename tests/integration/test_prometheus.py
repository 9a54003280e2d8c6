"""The shipped alerting rules on a real Prometheus (Debian's) scraping the lab's three agents.

Prometheus runs in the lab's client namespace, on that namespace's loopback, and scrapes the
agents' GET /metrics across the lab's bridge with basic auth, as a user would set it up (the
agents have a PASSWORD, so they serve the network). It loads
packaging/prometheus/link-rules.yml itself, unchanged: its `for:` durations are the shipped,
realistic ones (30 s to 1 min), and the test waits for them, bounded. Only the scrape and
evaluation intervals are short (1 s), so each `for:` is many evaluations long here.

198.51.100.50 is given to h1 and h2, 198.51.100.51 to h3 alone. Healthy, nothing is pending
nor firing. Then h1 and h2 stop (198.51.100.50 has no host left) and etcd stops: the
no-holder, agent-down and etcd-unreachable alerts fire, with the right labels, and nothing else.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import AGENT_PORT, wait_until
from tests.lab.prometheus import BINARY, Prometheus

pytestmark = [pytest.mark.lab, pytest.mark.lab_timeout(240)]

RULES = Path(__file__).resolve().parents[2] / "packaging" / "prometheus" / "link-rules.yml"
SHARED = "198.51.100.50/32"
ALONE = "198.51.100.51/32"
USER, PASSWORD = "ops", "scrape me gently"  # the agents' USER and PASSWORD, also Prometheus's basic_auth


@pytest.fixture
def prometheus(lab):
    if not Path(BINARY).exists():
        pytest.fail(f"{BINARY} is missing: scripts/install.sh installs Debian's prometheus")
    server = Prometheus(lab.client_ns, lab.workdir, [f"{h.ip}:{AGENT_PORT}" for h in lab.hosts], [RULES],
                        USER, PASSWORD)
    try:
        yield server.start()
    finally:
        server.stop()


def _instance(lab, name: str) -> str:
    return f"{lab.host(name).ip}:{AGENT_PORT}"


def _active(server: Prometheus) -> set[tuple[str, str, str]]:
    """(alert name, the label that says what, state) of every pending or firing alert."""
    return {(a["labels"]["alertname"], a["labels"].get("ip") or a["labels"].get("instance", ""), a["state"])
            for a in server.alerts()}


def test_alerts_stay_quiet_when_healthy_then_fire_when_a_vip_loses_its_hosts_and_etcd_goes(lab, prometheus):
    lab.start_agents(USER=USER, PASSWORD=PASSWORD)
    shared = lab.add_vip(SHARED, [lab.host(1), lab.host(2)])
    alone = lab.add_vip(ALONE, [lab.host(3)])
    lab.wait_agreement(SHARED, shared)
    lab.wait_agreement(ALONE, alone)
    rules = prometheus.rules()
    assert {r.get("name") for r in rules} >= {"link:vip_holders:count", "LinkVIPNoHolder", "LinkEtcdUnreachable",
                                             "LinkAgentDown"}, rules
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]

    # Healthy: every agent scraped, and the recording rule (evaluated from those scrapes) sees
    # one holder per VIP. Then several evaluations later nothing is pending or firing.
    wait_until(lambda: set(prometheus.targets_health().values()) == {"up"} and len(prometheus.targets_health()) == 3,
               30, 0.5, "Prometheus to scrape the three agents")
    holders = {frozenset({("__name__", "link:vip_holders:count"), ("ip", SHARED)}): 1.0,
               frozenset({("__name__", "link:vip_holders:count"), ("ip", ALONE)}): 1.0}
    wait_until(lambda: prometheus.query("link:vip_holders:count") == holders, 30, 0.5, "one holder per VIP")
    seen: list[set] = []

    def ten_looks() -> bool:  # about five evaluations of the rules
        seen.append(_active(prometheus))
        return len(seen) >= 10

    wait_until(ten_looks, 15, 0.5, "ten looks at the alerts")
    assert all(s == set() for s in seen), f"alerts while the cluster is healthy: {seen}"

    # Every host of SHARED stops, then etcd.
    lab.host(1).agent.stop()
    lab.host(2).agent.stop()
    lab.etcd.stop()
    expected = {("LinkVIPNoHolder", SHARED, "firing"), ("LinkAgentDown", _instance(lab, "h1"), "firing"),
                ("LinkAgentDown", _instance(lab, "h2"), "firing"),
                ("LinkEtcdUnreachable", _instance(lab, "h3"), "firing")}
    last: list[set] = []

    def all_fire() -> bool:
        last[:] = [_active(prometheus)]
        return expected <= last[0]

    # The longest path is LinkEtcdUnreachable: a minute without a renewal, then `for: 30s`.
    wait_until(all_fire, 150, 1.0, f"{sorted(expected)} to fire")
    assert {a for a in last[0] if a[2] == "firing"} == expected, last[0]
    assert not any(name == "LinkVIPTwoHolders" for name, _, _ in last[0]), last[0]
