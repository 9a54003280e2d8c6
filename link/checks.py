"""Health checks of a VIP: what a valid check is, and running one.

Three kinds: TCP (connect and close, as LinK), HTTP (a GET whose status must match) and EXEC
(a program whose exit status 0 means healthy; only from SCRIPTS_DIR, run as SCRIPT_USER: see
link.scripts). All checks of a VIP must pass.
"""
from __future__ import annotations

import http.client
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from link.scripts import ProgramPolicy, ScriptRefused

logger = logging.getLogger(__name__)

MAX_CHECKS = 16
MAX_OUTPUT = 200  # characters of an EXEC check's output kept in the log


class CheckError(ValueError):
    """A check given through the API is not valid; the message names the field."""


def _require(check: dict[str, Any], field: str, kinds: tuple[type, ...], where: str) -> Any:
    if field not in check:
        raise CheckError(f"{where}.{field} is required")
    value = check[field]
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in kinds)
        raise CheckError(f"{where}.{field} must be a {names}")
    return value


def _validate_one(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise CheckError(f"{where} must be an object like {{\"type\": \"TCP\", \"host\": \"198.51.100.20\", \"port\": 5432}}")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind.upper() not in ("TCP", "HTTP", "EXEC"):
        raise CheckError(f"{where}.type must be one of TCP, HTTP, EXEC")
    kind = kind.upper()
    allowed = {"TCP": {"type", "host", "port"}, "HTTP": {"type", "url", "expect_status"}, "EXEC": {"type", "command"}}[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise CheckError(f"{where}.{unknown[0]} is not a field of a {kind} check")
    if kind == "TCP":
        host = _require(raw, "host", (str,), where).strip()
        if not host or len(host) > 253 or any(c.isspace() for c in host) or not host.isprintable():
            raise CheckError(f"{where}.host must be a host name or address")
        port = _require(raw, "port", (int,), where)
        if not 1 <= port <= 65535:
            raise CheckError(f"{where}.port must be between 1 and 65535")
        return {"type": "TCP", "host": host, "port": port}
    if kind == "HTTP":
        url = _require(raw, "url", (str,), where).strip()
        if not url.isprintable():
            raise CheckError(f"{where}.url must not contain control characters")
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed "[" of an IPv6 address
            raise CheckError(f"{where}.url is not a valid URL") from None
        try:
            parts.port
        except ValueError:
            raise CheckError(f"{where}.url has a bad port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CheckError(f"{where}.url must be an http:// or https:// URL")
        status = raw.get("expect_status", 200)
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            raise CheckError(f"{where}.expect_status must be an HTTP status between 100 and 599")
        return {"type": "HTTP", "url": url, "expect_status": status}
    command = _require(raw, "command", (list,), where)
    if not command or not all(isinstance(part, str) and part for part in command):
        raise CheckError(f"{where}.command must be a non-empty list of strings (no shell)")
    if any("\0" in part for part in command):
        # exec() cannot take a NUL byte: refused here rather than failing every round.
        raise CheckError(f"{where}.command must not contain NUL characters")
    for i, part in enumerate(command):
        if not utf8(part):
            # A lone surrogate ("\ud800", which JSON can spell) has no bytes exec could take.
            raise CheckError(f"{where}.command[{i}] must be valid UTF-8 text (no lone surrogate)")
    if not os.path.isabs(command[0]):
        raise CheckError(f"{where}.command[0] must be an absolute path")
    return {"type": "EXEC", "command": list(command)}


def utf8(text: str) -> bool:
    """Whether `text` can be encoded as UTF-8, as anything passed to exec must be."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_checks(value: object, field: str = "checks") -> list[dict[str, Any]]:
    """The checks in canonical form; CheckError names the first bad field."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise CheckError(f"{field} must be a list of checks")
    if len(value) > MAX_CHECKS:
        raise CheckError(f"{field} has {len(value)} checks; at most {MAX_CHECKS}")
    return [_validate_one(raw, f"{field}[{i}]") for i, raw in enumerate(value)]


def describe(check: dict[str, Any]) -> str:
    if check["type"] == "TCP":
        return f"TCP {check['host']}:{check['port']}"
    if check["type"] == "HTTP":
        return f"HTTP {check['url']}"
    return "EXEC " + " ".join(check["command"])


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    seconds: float
    refused: str = ""  # why an EXEC check's program was not run (link.scripts), "" if it ran


def run_check(check: dict[str, Any], timeout: float, programs: ProgramPolicy | None = None) -> CheckResult:
    """Run one check; `programs` (SCRIPTS_DIR, SCRIPT_USER) is needed by EXEC checks, which
    fail without it rather than run a program nobody vetted."""
    start = time.monotonic()
    refused = ""
    try:
        ok, detail = _RUNNERS[check["type"]](check, timeout, programs)
    except ScriptRefused as exc:
        ok, detail, refused = False, f"program refused, not run: {exc}", str(exc)
    except Exception as exc:  # any failure of the probe is an unhealthy result, never a crash
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return CheckResult(ok, f"{describe(check)}: {detail}", time.monotonic() - start, refused)


def _tcp(check: dict[str, Any], timeout: float, _programs: ProgramPolicy | None) -> tuple[bool, str]:
    with socket.create_connection((check["host"], check["port"]), timeout=timeout):
        return True, "connected"


def _http(check: dict[str, Any], timeout: float, _programs: ProgramPolicy | None) -> tuple[bool, str]:
    parts = urlsplit(check["url"])
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        # No redirect is followed: the status we get is the one we judge.
        conn.request("GET", path, headers={"User-Agent": "link-healthcheck", "Connection": "close"})
        status = conn.getresponse().status
    except http.client.HTTPException as exc:
        # Only the status is ever shown: this exception's text quotes what the server sent
        # (BadStatusLine carries its first line), and the check's detail reaches the API.
        return False, f"the answer is not HTTP ({type(exc).__name__})"
    finally:
        conn.close()
    return status == check["expect_status"], f"status {status}"


def _exec(check: dict[str, Any], timeout: float, programs: ProgramPolicy | None) -> tuple[bool, str]:
    if programs is None:
        raise ScriptRefused("no SCRIPTS_DIR to check the program against")
    # Checked right before the run: a program changed since the VIP was added (now writable by
    # others, retargeted symlink...) is not run (ScriptRefused). vfork+exec, no preexec_fn: the
    # child runs no Python and touches none of this worker's gRPC state (see prepare()).
    args, options = programs.prepare(check["command"], os.environ)
    try:
        done = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout, close_fds=True, check=False, **options,
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:g}s"
    output = done.stdout.decode(errors="replace").strip().replace("\n", " | ")
    if len(output) > MAX_OUTPUT:
        output = output[:MAX_OUTPUT] + "…"
    return done.returncode == 0, f"exit {done.returncode}" + (f" ({output})" if output else "")


_RUNNERS = {"TCP": _tcp, "HTTP": _http, "EXEC": _exec}
