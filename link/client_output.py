"""What link-client prints for people: a table of IPs, one IP as `key: value` lines.

Everything shown comes from the network, so it goes through `clean` (no terminal escapes),
and fields a newer agent adds are shown rather than hidden.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from link.client_http import clean

TABLE_HEADER = ("ID", "IP", "STATUS", "HOLDER", "SINCE", "CHECKS")
_SHOWN = ("id", "ip", "status", "holder", "since", "checks", "healthcheck_interval", "fault_policy", "worker")


def describe_check(check: object) -> str:
    """One health check in a few words, e.g. `TCP 198.51.100.20:5432`."""
    if not isinstance(check, dict):
        return clean(check)
    kind = str(check.get("type", "?")).upper()
    if kind == "TCP":
        host = str(check.get("host", "?"))
        return clean(f"TCP {'[' + host + ']' if ':' in host else host}:{check.get('port', '?')}")
    if kind == "HTTP":
        status = check.get("expect_status", 200)
        return clean(f"HTTP {check.get('url', '?')}" + (f" (expects {status})" if status != 200 else ""))
    if kind == "EXEC":
        command = check.get("command")
        return clean("EXEC " + (" ".join(map(str, command)) if isinstance(command, list) else "?"))
    return clean(json.dumps(check, sort_keys=True))


def _checks_summary(checks: object) -> str:
    if not isinstance(checks, list) or not checks:
        return "-"
    return ", ".join(describe_check(check) for check in checks)


def _worker_summary(worker: object) -> str:
    if not isinstance(worker, dict):
        return "-"
    text = clean(worker.get("state"))
    restarts = worker.get("restarts")
    if isinstance(restarts, int) and restarts:
        text += f" ({restarts} restart{'s' if restarts != 1 else ''})"
    return text


def _status(ip: dict[str, Any]) -> str:
    status = clean(ip.get("status"))
    worker = ip.get("worker")
    # The state machine's status says nothing of a worker that keeps crashing: say it here.
    if isinstance(worker, dict) and worker.get("state") not in (None, "RUNNING"):
        status += f" (worker {clean(worker.get('state'))})"
    return status


def format_table(ips: Sequence[Any]) -> str:
    if not ips:
        return "No IP configured on this agent."
    rows = [TABLE_HEADER]
    for ip in ips:
        ip = ip if isinstance(ip, dict) else {}
        rows.append(
            (
                clean(ip.get("id")),
                clean(ip.get("ip")),
                _status(ip),
                clean(ip.get("holder")),
                clean(ip.get("since")),
                _checks_summary(ip.get("checks")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


EVENTS_HEADER = ("TIME", "FROM", "TO", "EVENT", "REASON")


def format_events(events: Sequence[Any]) -> str:
    """Events as a table, oldest first (as the agent sends them)."""
    if not events:
        return "No event recorded for this IP yet."
    rows = [EVENTS_HEADER]
    for event in events:
        event = event if isinstance(event, dict) else {}
        name = clean(event.get("event"))
        if event.get("source") == "supervisor":
            name += " (supervisor)"
        rows.append((clean(event.get("time")), clean(event.get("from")), clean(event.get("to")), name, clean(event.get("reason"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(EVENTS_HEADER) - 1)]
    # The reason is last and not padded: a long sentence wraps in the terminal, not the table.
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)


def _interval(value: object) -> str:
    if value == 0:
        return "agent's default (HEALTH_CHECK_INTERVAL)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g} s"
    return clean(value)


def format_ip(ip: Any) -> str:
    if not isinstance(ip, dict):
        return clean(ip)
    lines: list[tuple[str, str]] = []
    for key, label in (("id", "id"), ("ip", "ip"), ("status", "status"), ("holder", "holder"), ("since", "since")):
        if key in ip:
            lines.append((label, clean(ip[key])))
    checks = ip.get("checks")
    if isinstance(checks, list):
        if not checks:
            lines.append(("checks", "none"))
        for index, check in enumerate(checks):
            lines.append(("checks" if index == 0 else "", describe_check(check)))
    if "healthcheck_interval" in ip:
        lines.append(("interval", _interval(ip["healthcheck_interval"])))
    if "fault_policy" in ip:
        lines.append(("fault policy", clean(ip["fault_policy"])))
    worker = ip.get("worker")
    if isinstance(worker, dict):
        lines.append(("worker", _worker_summary(worker)))
        if worker.get("pid") is not None:
            lines.append(("pid", clean(worker["pid"])))
        if worker.get("error"):
            lines.append(("error", clean(worker["error"])))
    for key, value in ip.items():
        if key not in _SHOWN:
            lines.append((clean(key), clean(json.dumps(value) if isinstance(value, (dict, list)) else value)))
    width = max(len(label) for label, _ in lines) + 1 if lines else 0
    return "\n".join(f"{(label + ':') if label else '':<{width}} {value}".rstrip() for label, value in lines)
