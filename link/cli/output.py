"""What link-client prints for people: a table of IPs, one IP as `key: value` lines.

Everything shown comes from the network, so it goes through `clean` (no terminal escapes),
and fields a newer agent adds are shown rather than hidden. No JSON reaches people: true and
false read yes and no, objects (the binder's settings and status) become indented fields.
"""
from __future__ import annotations

import shlex
from typing import Any, Sequence

from link.cli.transport import clean

TABLE_HEADER = ("ID", "IP", "STATUS", "HOLDER", "SINCE", "CHECKS")
_SHOWN = ("id", "ip", "status", "holder", "since", "checks", "healthcheck_interval", "fault_policy", "worker", "priority",
          "preempt", "notify", "follow", "follow_value", "candidates", "candidates_error", "binder", "command", "webhook",
          "binder_status", "wire")


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
    # A kind this client does not know (a newer agent's): its fields, in words.
    return f"{clean(kind)} " + _inline({key: value for key, value in check.items() if key != "type"})


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


WORKER_RUNNING = "RUNNING"  # link.supervisor.worker_states' name, not imported: the client stays stdlib-only


def _status(ip: dict[str, Any]) -> str:
    status = clean(ip.get("status"))
    worker = ip.get("worker")
    # The state machine's status says nothing of a worker that keeps crashing: say it here.
    if isinstance(worker, dict) and worker.get("state") not in (None, WORKER_RUNNING):
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
    return _seconds(value)


def _seconds(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g} s"
    return _scalar(value)


def _scalar(value: object) -> str:
    """A JSON scalar for people: true/false as yes/no, null as `-`."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return clean(value)


def _inline(value: object) -> str:
    """A value on one line: a list as its items, an object as `key value` pairs."""
    if isinstance(value, list):
        return ", ".join(_inline(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{_label(k)} {_inline(v)}" for k, v in value.items()) if value else "-"
    return _scalar(value)


def _label(key: object) -> str:
    return clean(key).replace("_", " ")


Lines = list[tuple[str, str]]


def _fields(label: str, value: object, indent: str = "") -> Lines:
    """`label: value` lines for any JSON value: an object as one indented line per field
    (nested objects further in), a list of objects as one line per item, never raw JSON."""
    if isinstance(value, dict):
        lines: Lines = [(indent + label, "")]
        for key, item in value.items():
            lines += _fields(_label(key), item, indent + "  ")
        return lines
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        return [(indent + label if index == 0 else "", _inline(item)) for index, item in enumerate(value)]
    return [(indent + label, _inline(value))]


def _candidates(candidates: object) -> Lines:
    if not isinstance(candidates, list):
        return _fields("candidates", candidates)
    if not candidates:
        return [("candidates", "none known")]
    lines: Lines = []
    for index, candidate in enumerate(candidates):
        if isinstance(candidate, dict) and "host" in candidate:
            text = f"{clean(candidate['host'])} (priority {clean(candidate.get('priority'))}, {clean(candidate.get('state'))})"
        else:
            text = _inline(candidate)
        lines.append(("candidates" if index == 0 else "", text))
    return lines


def _heard(items: object) -> str:
    if not isinstance(items, list) or not items:
        return "none"
    return ", ".join(f"{clean(i.get('host'))} (priority {clean(i.get('priority'))}{', etcd lock' if i.get('lock') else ''})"
                     if isinstance(i, dict) else _inline(i) for i in items)


def _wire(wire: object) -> Lines:
    """What the heartbeats between hosts say of the VIP (FAULT_POLICY=arbitrate)."""
    if not isinstance(wire, dict):
        return [] if wire is None else _fields("wire", wire)
    decision = wire.get("decision")
    text = clean(decision) if decision else "none (etcd decides)"
    if decision and wire.get("since"):
        text += f" since {clean(wire['since'])}"
    if wire.get("rank") is not None:
        text += f", rank {clean(wire['rank'])}"
    lines: Lines = [("wire decision", text)]
    if wire.get("reason"):
        lines.append(("", clean(wire["reason"])))
    says = wire.get("says")
    if isinstance(says, dict):
        held = ("holds it" + (" with the etcd lock" if says.get("lock") else "")) if says.get("bound") else "does not hold it"
        lines.append(("wire says", f"{held}, {'eligible' if says.get('eligible') else 'not eligible'}, "
                                   f"priority {clean(says.get('priority'))}"))
    lines.append(("wire holders", _heard(wire.get("holders"))))
    lines.append(("wire candidates", _heard(wire.get("candidates"))))
    return lines


# The binders' settings in seconds, shown with their unit.
_BINDER_SECONDS = ("timeout", "ensure_interval")


def _setting(key: str, value: object) -> str:
    if key in _BINDER_SECONDS:
        return _seconds(value)
    if isinstance(value, list):  # a program and its arguments, as a shell would take them
        return clean(shlex.join(str(item) for item in value))
    return _inline(value)


def _binder(ip: dict[str, Any]) -> Lines:
    lines: Lines = [("binder", clean(ip.get("binder")))] if "binder" in ip else []
    for kind in ("command", "webhook"):
        settings = ip.get(kind)
        if settings is None:
            continue
        if not isinstance(settings, dict):
            lines += _fields(kind, settings)
            continue
        lines += [(f"  {_label(key)}", _setting(key, value)) for key, value in settings.items() if value is not None]
    if "binder_status" in ip:  # ok, action, error, attempts, since: one indented line each
        lines += _fields("binder status", ip["binder_status"])
    return lines


def format_ip(ip: Any) -> str:
    if not isinstance(ip, dict):
        return clean(ip)
    lines: Lines = []
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
    for key in ("priority", "preempt"):
        if key in ip:
            lines.append((key, _scalar(ip[key])))
    if isinstance(ip.get("notify"), list):  # [] : the agent's NOTIFY runs (if it has one)
        lines.append(("notify", " ".join(shlex.quote(clean(arg)) for arg in ip["notify"]) or "the agent's NOTIFY"))
    if ip.get("follow"):  # a leader key followed instead of an election (null: elected, nothing to say)
        lines.append(("follows", f"{clean(ip['follow'])} (this host: {clean(ip.get('follow_value'))})"))
    worker = ip.get("worker")
    if isinstance(worker, dict):
        lines.append(("worker", _worker_summary(worker)))
        if worker.get("pid") is not None:
            lines.append(("pid", clean(worker["pid"])))
        if worker.get("error"):
            lines.append(("error", clean(worker["error"])))
    if "candidates" in ip:
        lines += _candidates(ip["candidates"])
    if "candidates_error" in ip:
        lines.append(("candidates error", clean(ip["candidates_error"])))
    lines += _binder(ip)
    lines += _wire(ip.get("wire"))
    for key, value in ip.items():
        if key not in _SHOWN:
            lines += _fields(_label(key), value)
    width = max(len(label) for label, _ in lines) + 1 if lines else 0
    return "\n".join(f"{(label + ':') if label else '':<{width}} {value}".rstrip() for label, value in lines)
