"""link-client show: the VIP document's `wire` field, in words."""
from __future__ import annotations

from link.cli.output import format_ip


def test_show_prints_what_the_wire_says() -> None:
    text = format_ip({"id": "vip-1", "ip": "198.51.100.7/32", "status": "STANDBY", "wire": {
        "holders": [{"host": "h2", "priority": 10, "lock": True}],
        "candidates": [{"host": "h2", "priority": 10, "lock": True}, {"host": "h3\x1b[31m", "priority": 12, "lock": False}],
        "rank": 2, "decision": "wait", "since": "2026-12-03T16:00:00.000Z", "reason": "h2 holds the VIP (heard on the wire)",
        "says": {"bound": False, "lock": False, "eligible": True, "priority": 11}}})
    lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith(" "))
    assert lines["wire decision"].strip() == "wait since 2026-12-03T16:00:00.000Z, rank 2"
    assert lines["wire holders"].strip() == "h2 (priority 10, etcd lock)"
    assert "h3" in lines["wire candidates"] and "\x1b" not in text
    assert lines["wire says"].strip() == "does not hold it, eligible, priority 11"
    assert "h2 holds the VIP (heard on the wire)" in text


def test_while_etcd_decides_it_says_so_and_no_wire_field_prints_nothing() -> None:
    text = format_ip({"id": "vip-1", "wire": {"holders": [], "candidates": [], "rank": None, "decision": None, "since": None,
                                              "reason": "", "says": {"bound": True, "lock": True, "eligible": True,
                                                                     "priority": 10}}})
    assert "wire decision:   none (etcd decides)" in text and "holds it with the etcd lock" in text
    assert "wire" not in format_ip({"id": "vip-1", "wire": None})


def test_the_client_offers_the_agents_fault_policies() -> None:
    """link-client keeps its own copy (it imports nothing of the agent): the two lists are one."""
    from link.cli.link_client import FAULT_POLICIES as CLIENT_POLICIES
    from link.config import FAULT_POLICIES

    assert CLIENT_POLICIES == FAULT_POLICIES
