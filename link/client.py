"""link-client: list, add, show and delete the VIPs of one link (or LinK v2) agent.

Standard library only, so it runs wherever Python does, without the agent's dependencies.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TextIO
from urllib.parse import quote, urlsplit

from link import __version__

DEFAULT_HOST = "localhost:1313"
DEFAULT_PORT = 1313
DEFAULT_TIMEOUT = 60.0  # above the agent's own 30 s wait on its supervisor, so its 503 wins

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for a usage error
EXIT_SERVER = 3
EXIT_UNREACHABLE = 4

PROG = "link-client"

EPILOG = f"""\
examples:
  {PROG} list
  {PROG} add 198.51.100.50/32          (a bare address means /32 or /128)
  {PROG} get vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e
  {PROG} delete vip-8c1e40e6-0f3a-4c5e-9a57-0b6a3a1c2d4e
  {PROG} --host https://192.0.2.10:1313 --user admin list
  LINK_PASSWORD=secret {PROG} --host 192.0.2.10 list --json | jq -r '.ips[].id'

environment:
  LINK_HOST       agent address, as --host (default {DEFAULT_HOST})
  LINK_USER       user for basic auth, as --user
  LINK_PASSWORD   password for basic auth, as --password (safer: not shown by ps)

--host takes host, host:port or an http:// or https:// URL; without a port and without a
scheme the port is {DEFAULT_PORT}.

exit codes: 0 success, 2 usage error, 3 the agent answered an error, 4 agent unreachable
"""


class ClientError(Exception):
    """A failure to report on one line; `code` is the process exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    prefix: str  # a path the agent is served under, e.g. behind a reverse proxy

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"


def parse_host(text: str) -> Target:
    """Where the agent is: `host`, `host:port`, `[v6]:port` or an http(s) URL."""
    raw = text.strip()
    has_scheme = "://" in raw
    url = urlsplit(raw if has_scheme else f"http://{raw}")
    if url.scheme not in ("http", "https"):
        raise ValueError(f"--host {text!r}: only http:// and https:// are supported")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"--host {text!r}: bad port") from None
    if not url.hostname:
        raise ValueError(f"--host {text!r}: no host name")
    if url.query or url.fragment or url.username is not None:
        raise ValueError(f"--host {text!r}: give only scheme, host, port and path (credentials go in --user/--password)")
    if port is None:
        port = DEFAULT_PORT if not has_scheme else (443 if url.scheme == "https" else 80)
    return Target(url.scheme, url.hostname, port, url.path.rstrip("/"))


@dataclass(frozen=True)
class Agent:
    """One agent's API, spoken with http.client (no proxy settings: the agent is on the LAN)."""

    target: Target
    user: str
    password: str
    timeout: float

    def request(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Accept": "application/json", "User-Agent": f"{PROG}/{__version__}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.user or self.password:
            token = base64.b64encode(f"{self.user}:{self.password}".encode("utf-8")).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        conn = self._connection()
        try:
            conn.request(method, self.target.prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ClientError(EXIT_UNREACHABLE, f"cannot reach the agent at {self.target}: {_reason(exc, self.timeout)}") from None
        finally:
            conn.close()
        payload = _decode(raw)
        if response.status >= 300:
            raise ClientError(EXIT_SERVER, _server_error(response.status, response.reason, payload))
        if raw.strip() and payload is None:
            raise ClientError(EXIT_SERVER, f"the agent at {self.target} answered something that is not JSON (HTTP {response.status})")
        return payload

    def _connection(self) -> http.client.HTTPConnection:
        if self.target.scheme == "https":
            return http.client.HTTPSConnection(
                self.target.host, self.target.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout)


def _reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _decode(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _server_error(status: int, reason: str, payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error = payload["error"]
        # LinK's 404 is {"resource": "IP", "error": "not found"}: say "IP not found".
        if isinstance(payload.get("resource"), str):
            error = f"{payload['resource']} {error}"
        return f"{_clean(error)} (HTTP {status})"
    return f"the agent answered HTTP {status} {_clean(reason)}"


def _clean(value: object) -> str:
    """Text from the network, made safe for a terminal (no escape sequences)."""
    text = "-" if value is None else str(value)
    return "".join(c if c.isprintable() else "?" for c in text)


# --- output for people -------------------------------------------------------------------------

def _worker_summary(worker: object) -> str:
    if not isinstance(worker, dict):
        return "-"
    text = _clean(worker.get("state"))
    restarts = worker.get("restarts")
    if isinstance(restarts, int) and restarts:
        text += f" ({restarts} restart{'s' if restarts != 1 else ''})"
    return text


def format_table(ips: Sequence[Any]) -> str:
    if not ips:
        return "No IP configured on this agent."
    header = ("ID", "IP", "STATUS", "HOLDER", "WORKER", "SINCE")
    rows = [header]
    for ip in ips:
        ip = ip if isinstance(ip, dict) else {}
        rows.append(
            (
                _clean(ip.get("id")),
                _clean(ip.get("ip")),
                _clean(ip.get("status")),
                _clean(ip.get("holder")),
                _worker_summary(ip.get("worker")),
                _clean(ip.get("since")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def format_ip(ip: Any) -> str:
    if not isinstance(ip, dict):
        return _clean(ip)
    lines: list[tuple[str, str]] = []
    for key in ("id", "ip", "status", "holder", "since"):
        if key in ip:
            lines.append((key, _clean(ip[key])))
    worker = ip.get("worker")
    if isinstance(worker, dict):
        lines.append(("worker", _worker_summary(worker)))
        if worker.get("pid") is not None:
            lines.append(("pid", _clean(worker["pid"])))
        if worker.get("error"):
            lines.append(("error", _clean(worker["error"])))
    # Fields a newer agent may add are shown too rather than hidden.
    for key, value in ip.items():
        if key not in ("id", "ip", "status", "holder", "since", "worker"):
            lines.append((_clean(key), _clean(json.dumps(value) if isinstance(value, (dict, list)) else value)))
    width = max(len(key) for key, _ in lines) + 1 if lines else 0
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in lines)


# --- commands ----------------------------------------------------------------------------------

def _print_json(payload: Any, out: TextIO) -> None:
    print(json.dumps(payload, indent=2, sort_keys=False), file=out)


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
    payload = agent.request("POST", "/ips", {"ip": args.ip})
    if args.json:
        _print_json(payload, out)
    else:
        print(format_ip(payload), file=out)


def cmd_get(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    payload = agent.request("GET", f"/ips/{quote(args.id, safe='')}")
    if args.json:
        _print_json(payload, out)
    else:
        print(format_ip(payload.get("ip") if isinstance(payload, dict) else payload), file=out)


def cmd_delete(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    agent.request("DELETE", f"/ips/{quote(args.id, safe='')}")
    # 204 has no body: --json prints nothing, the exit code says it all.
    if not args.json:
        print(f"Deleted {_clean(args.id)}", file=out)


def cmd_version(agent: Agent, args: argparse.Namespace, out: TextIO) -> None:
    payload = agent.request("GET", "/version")
    if args.json:
        _print_json(payload, out)
        return
    server = payload.get("version") if isinstance(payload, dict) else None
    print(f"agent:  {_clean(server)} ({agent.target})", file=out)
    print(f"client: {__version__}", file=out)


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

    def command(name: str, func: Command, help_text: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, aliases=list(aliases), help=help_text, description=help_text)
        _add_common_options(sub, in_subcommand=True)
        sub.set_defaults(func=func)
        return sub

    command("list", cmd_list, "list the IPs of the agent")
    command("add", cmd_add, "add an IP", ["create"]).add_argument(
        "ip", help="the VIP, e.g. 198.51.100.50/32 or 2001:db8::50"
    )
    command("get", cmd_get, "show one IP", ["show"]).add_argument("id", help="the IP's id (vip-...)")
    command("delete", cmd_delete, "remove an IP; returns once the agent released it", ["destroy"]).add_argument(
        "id", help="the IP's id (vip-...)"
    )
    command("version", cmd_version, "show the versions of the agent and of this client")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    env = os.environ
    try:
        target = parse_host(args.host or env.get("LINK_HOST", "") or DEFAULT_HOST)
    except ValueError as exc:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout <= 0:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: --timeout must be positive", file=sys.stderr)
        return EXIT_USAGE
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
