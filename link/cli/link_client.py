"""link-client: list, add, show, change, fail over and delete the VIPs of one link (or LinK v2) agent.

Standard library only, so it runs wherever Python does, without the agent's dependencies.
HTTP is in `link.cli.transport`, what is printed for people in `link.cli.output`.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any, Callable, Sequence, TextIO
from urllib.parse import quote

from link import __version__
from link.cli.transport import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    EXIT_OK,
    EXIT_SERVER,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    PROG,
    Agent,
    ClientError,
    Target,
    clean,
    parse_host,
)
from link.cli.output import format_events, format_ip, format_table

__all__ = [
    "EXIT_OK", "EXIT_SERVER", "EXIT_UNREACHABLE", "EXIT_USAGE", "Target", "build_parser", "main",
    "parse_health_check", "parse_host",
]

DEFAULT_TIMEOUT = 60.0  # above the agent's own 30 s wait on its supervisor, so its 503 wins
FAULT_POLICIES = ("arbitrate", "activate", "keep", "release")  # link.vocabulary.fault_policies', not imported: the client stays stdlib-only
EXAMPLE_ID = "vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e"

EPILOG = f"""\
examples:
  {PROG} list
  {PROG} add 198.51.100.50/32          (a bare address means /32 or /128)
  {PROG} add 198.51.100.50 --health-check TCP:198.51.100.20:5432
  {PROG} get {EXAMPLE_ID}
  {PROG} set-health-checks {EXAMPLE_ID} --health-check HTTP:http://198.51.100.20/health
  {PROG} failover {EXAMPLE_ID}
  {PROG} events {EXAMPLE_ID}
  {PROG} delete {EXAMPLE_ID}
  {PROG} --host https://192.0.2.10:1313 --user admin list
  LINK_PASSWORD=secret {PROG} --host 192.0.2.10 list --json | jq -r '.ips[].id'

environment:
  LINK_HOST       agent address, as --host (default {DEFAULT_HOST})
  LINK_USER       user for basic auth, as --user
  LINK_PASSWORD   password for basic auth, as --password (safer: not shown by ps)

--host takes host, host:port or an http:// or https:// URL; without a port and without a
scheme the port is {DEFAULT_PORT}. `{PROG} COMMAND --help` shows each command's options.

exit codes: 0 success, 2 usage error, 3 the agent answered an error, 4 agent unreachable
"""

HEALTH_CHECK_HELP = """\
health checks (--health-check, repeatable; all must pass for this host to compete):
  TCP:HOST:PORT          connect to HOST:PORT (LinK's check), e.g. TCP:198.51.100.20:5432,
                         TCP:[2001:db8::20]:5432
  HTTP:URL               GET URL, healthy on status 200, e.g. HTTP:http://198.51.100.20/health
  HTTP:STATUS:URL        the same, healthy on STATUS, e.g. HTTP:204:https://198.51.100.20/ready
  EXEC:/PATH [ARG...]    run the program (no shell; arguments split as a shell would),
                         healthy on exit status 0, e.g. 'EXEC:/usr/local/bin/check-db --quick'
"""


# --- health check specifications --------------------------------------------------------------

def parse_health_check(text: str) -> dict[str, Any]:
    """A `--health-check` value as the API's check object; ValueError saying what is wrong.

    Only the form is checked here; the agent checks the rest and names the field at fault.
    """
    kind, colon, rest = text.partition(":")
    kind = kind.strip().upper()
    if not colon or kind not in ("TCP", "HTTP", "EXEC"):
        raise ValueError(f"{text!r}: expected TCP:HOST:PORT, HTTP:URL, HTTP:STATUS:URL or EXEC:/PATH [ARG...]")
    if kind == "TCP":
        host, colon, port = rest.rpartition(":")
        host = host.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not colon or not host or not port.strip().isdigit():
            raise ValueError(f"{text!r}: expected TCP:HOST:PORT, e.g. TCP:198.51.100.20:5432")
        return {"type": "TCP", "host": host, "port": int(port)}
    if kind == "HTTP":
        status, colon, url = rest.partition(":")
        check: dict[str, Any] = {"type": "HTTP"}
        if colon and status.strip().isdigit():
            check["expect_status"] = int(status)
        else:
            url = rest
        url = url.strip()
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"{text!r}: expected HTTP:URL with an http:// or https:// URL")
        return {**check, "url": url}
    try:
        command = shlex.split(rest)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if not command or not command[0].startswith("/"):
        raise ValueError(f"{text!r}: expected EXEC:/ABSOLUTE/PATH [ARG...]")
    return {"type": "EXEC", "command": command}


def _health_check_arg(text: str) -> dict[str, Any]:
    try:
        return parse_health_check(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds_arg(text: str) -> int | float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (seconds == 0 or 0.1 <= seconds <= 3600):
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 (the agent's default) or 0.1 to 3600 seconds")
    # LinK v2 agents read the interval as a whole number of seconds: send 5, not 5.0.
    return int(seconds) if seconds.is_integer() else seconds


def _notify_arg(text: str) -> list[str]:
    """'PROG [ARG...]' as the agent's `notify` field; "" is [] (the agent's NOTIFY)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if argv and not argv[0].startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected /ABSOLUTE/PATH [ARG...] (a program in the agent's SCRIPTS_DIR)")
    return argv


# --- commands ----------------------------------------------------------------------------------

def _print_json(payload: Any, out: TextIO) -> None:
    print(json.dumps(payload, indent=2), file=out)


def _ip_path(vip_id: str, suffix: str = "") -> str:
    # Quoted whole: an id with "/" or "?" stays one path segment and reaches the id check.
    return f"/ips/{quote(vip_id, safe='')}{suffix}"


def _print_ip(payload: Any, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        _print_json(payload, out)
    else:
        print(format_ip(payload), file=out)


def cmd_list(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    payload = agent.request("GET", "/ips")
    if args.json:
        _print_json(payload, out)
        return
    ips = payload.get("ips") if isinstance(payload, dict) else None
    if not isinstance(ips, list):
        raise ClientError(EXIT_SERVER, "the agent's list of IPs is not in the expected form")
    print(format_table(ips), file=out)


def cmd_add(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    body: dict[str, Any] = {"ip": args.ip}
    # Only what was given is sent: a LinK v2 agent knows nothing of fault_policy.
    if args.health_checks:
        body["checks"] = args.health_checks
    if args.health_check_interval is not None:
        body["healthcheck_interval"] = args.health_check_interval
    if args.fault_policy is not None:
        body["fault_policy"] = args.fault_policy
    if args.follow is not None:
        body["follow"] = args.follow
    if args.follow_value is not None:
        body["follow_value"] = args.follow_value
    if args.notify:
        body["notify"] = args.notify
    _print_ip(agent.request("POST", "/ips", body), args, out)


def cmd_get(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    payload = agent.request("GET", _ip_path(args.id))
    if args.json:
        _print_json(payload, out)
    else:
        print(format_ip(payload.get("ip") if isinstance(payload, dict) else payload), file=out)


def cmd_set_health_checks(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    body: dict[str, Any] = {}
    if args.health_checks or args.clear:
        # LinK's name for the field, so that a LinK v2 agent understands it too.
        body["healthchecks"] = args.health_checks or []
    if args.health_check_interval is not None:
        body["healthcheck_interval"] = args.health_check_interval
    if args.notify is not None:
        body["notify"] = args.notify
    _print_ip(agent.request("PATCH", _ip_path(args.id), body), args, out)


def cmd_failover(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    agent.request("POST", _ip_path(args.id, "/failover"))
    # 204 has no body: --json prints nothing, the exit code says it all.
    if not args.json:
        print(f"{clean(args.id)}: released by this agent; another host takes it over", file=out)


def cmd_events(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    payload = agent.request("GET", _ip_path(args.id, "/events"))
    if args.json:
        _print_json(payload, out)
        return
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise ClientError(EXIT_SERVER, "the agent's list of events is not in the expected form (a LinK v2 agent has none)")
    print(format_events(events), file=out)


def cmd_delete(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    agent.request("DELETE", _ip_path(args.id))
    if not args.json:
        print(f"Deleted {clean(args.id)}", file=out)


def cmd_version(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    try:
        payload = agent.request("GET", "/version")
    except ClientError:
        # The client's own version is worth printing even when the agent cannot be asked.
        if not args.json:
            print(f"client: {__version__}", file=out)
        raise
    server = payload.get("version") if isinstance(payload, dict) else None
    if args.json:
        _print_json({"client": __version__, "agent": server}, out)
        return
    print(f"client: {__version__}", file=out)
    print(f"agent:  {clean(server)} ({agent.target})", file=out)


Command = Callable[[Agent, argparse.Namespace, TextIO], None]


# --- arguments ---------------------------------------------------------------------------------

def _add_common_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # Defined on the main parser and on each command, so they may come before or after the
    # command. SUPPRESS keeps a command's parser from resetting what was given before it.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if in_subcommand else value

    group = parser.add_argument_group("connection and output")
    group.add_argument("--host", default=default(None), help=f"agent address (env LINK_HOST, default {DEFAULT_HOST})")
    group.add_argument("--user", default=default(None), help="basic auth user (env LINK_USER)")
    group.add_argument("--password", default=default(None), help="basic auth password (env LINK_PASSWORD)")
    group.add_argument(
        "--timeout", type=float, default=default(DEFAULT_TIMEOUT), metavar="SECONDS",
        help=f"give up after this long (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument("--json", action="store_true", default=default(False), help="print the agent's JSON, for scripts")


def _add_health_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--health-check", dest="health_checks", action="append", type=_health_check_arg, default=[],
        metavar="SPEC", help="a health check: TCP:HOST:PORT, HTTP:URL, HTTP:STATUS:URL or EXEC:/PATH [ARG...] (repeatable)",
    )
    parser.add_argument(
        "--health-check-interval", type=_seconds_arg, default=None, metavar="SECONDS",
        help="seconds between two rounds of checks (0: the agent's HEALTH_CHECK_INTERVAL)",
    )
    parser.add_argument(
        "--notify", type=_notify_arg, default=None, metavar="'PROG [ARG...]'",
        help="a program in the agent's SCRIPTS_DIR run on every state change with VIP OLD NEW REASON appended "
        "('' on update: back to the agent's NOTIFY)",
    )


def _examples(*lines: str) -> str:
    return "examples:\n" + "".join(f"  {PROG} {line}\n" for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage the virtual IPs of a link agent (also speaks to LinK v2 agents).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_common_options(parser, in_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Command, help_text: str, epilog: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, aliases=list(aliases), help=help_text, description=help_text, epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_options(sub, in_subcommand=True)
        sub.set_defaults(func=func, command_parser=sub)
        return sub

    command("list", cmd_list, "list the IPs of the agent", _examples("list", "list --json"))

    add = command(
        "add", cmd_add, "add an IP: this agent starts competing for it",
        _examples(
            "add 198.51.100.50/32",
            "add 2001:db8::50 --fault-policy keep",
            "add 198.51.100.50 --follow /service/pg/leader --follow-value pg-1",
            "add 198.51.100.50 --health-check TCP:198.51.100.20:5432 --health-check-interval 2",
            "add 198.51.100.50 --health-check 'EXEC:/usr/local/bin/check-db --quick'",
            "add 198.51.100.50 --notify /etc/link/scripts/notify",
        ) + "\n" + HEALTH_CHECK_HELP,
        ["create"],
    )
    add.add_argument("ip", help="the VIP, e.g. 198.51.100.50/32 or 2001:db8::50 (a bare address means /32 or /128)")
    _add_health_options(add)
    add.add_argument(
        "--fault-policy", choices=FAULT_POLICIES, default=None,
        help="when etcd is unreachable: arbitrate (the hosts agree on one holder over their heartbeat), "
        "activate (take the VIP, LinK's rule), keep (keep it if bound), release (unbind it); "
        "default: the agent's FAULT_POLICY",
    )
    add.add_argument(
        "--follow", default=None, metavar="KEY",
        help="follow this etcd key instead of an election (vip-manager's trigger-key; with Patroni "
        "/service/SCOPE/leader): the VIP is bound where the key's value names the host",
    )
    add.add_argument(
        "--follow-value", default=None, metavar="VALUE",
        help="with --follow: the key's value that means this host (Patroni's member name); default: the agent's HOSTNAME",
    )

    command("get", cmd_get, "show one IP", _examples(f"get {EXAMPLE_ID}"), ["show"]).add_argument(
        "id", help="the IP's id (vip-...)"
    )

    update = command(
        "set-health-checks", cmd_set_health_checks,
        "replace the health checks (or the notify program) of an IP, live (the VIP stays bound while the new checks pass)",
        _examples(
            f"set-health-checks {EXAMPLE_ID} --health-check TCP:198.51.100.20:5432",
            f"set-health-checks {EXAMPLE_ID} --health-check HTTP:204:http://198.51.100.20/ready --health-check-interval 5",
            f"set-health-checks {EXAMPLE_ID} --clear",
            f"set-health-checks {EXAMPLE_ID} --notify /etc/link/scripts/notify",
        ) + "\n" + HEALTH_CHECK_HELP,
        ["update-healthchecks"],
    )
    update.add_argument("id", help="the IP's id (vip-...)")
    _add_health_options(update)
    update.add_argument("--clear", action="store_true", help="remove every health check")

    command(
        "failover", cmd_failover,
        "hand the IP over to another host (only on the agent that holds it; another host must compete for it)",
        _examples(f"failover {EXAMPLE_ID}"),
    ).add_argument("id", help="the IP's id (vip-...)")

    command(
        "events", cmd_events,
        "show the recent events of an IP on this agent, oldest first: state changes and why, worker restarts",
        _examples(f"events {EXAMPLE_ID}", f"events {EXAMPLE_ID} --json | jq -r '.events[].reason'"),
    ).add_argument("id", help="the IP's id (vip-...)")

    command(
        "delete", cmd_delete, "remove an IP; returns once the agent released it",
        _examples(f"delete {EXAMPLE_ID}"), ["destroy"],
    ).add_argument("id", help="the IP's id (vip-...)")

    command(
        "version", cmd_version, "show the versions of this client and of the agent",
        _examples("version", "--host 192.0.2.10 version --json"),
    )
    return parser


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.func is cmd_set_health_checks:
        # Checked here rather than by argparse: --health-check-interval alone is a valid change.
        if args.clear and args.health_checks:
            return _usage_error(args.command_parser, "--clear and --health-check do not go together")
        if not (args.clear or args.health_checks or args.health_check_interval is not None or args.notify is not None):
            return _usage_error(args.command_parser,
                                "give --health-check (one or more), --clear, --health-check-interval or --notify")
    env = os.environ
    try:
        target = parse_host(args.host or env.get("LINK_HOST", "") or DEFAULT_HOST)
    except ValueError as exc:
        return _usage_error(parser, str(exc))
    if args.timeout <= 0:
        return _usage_error(parser, "--timeout must be positive")
    agent = Agent(
        target=target,
        user=args.user if args.user is not None else env.get("LINK_USER", ""),
        password=args.password if args.password is not None else env.get("LINK_PASSWORD", ""),
        timeout=args.timeout,
    )
    try:
        args.func(agent, args, sys.stdout)
    except ClientError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
