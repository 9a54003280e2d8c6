"""link-client's side of HTTP: where the agent is (`--host`), one request, and its errors.

Standard library only (http.client), like the rest of link-client.
"""
from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from link import __version__

PROG = "link-client"
DEFAULT_HOST = "localhost:1313"
DEFAULT_PORT = 1313

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for a usage error
EXIT_SERVER = 3  # the agent answered with an error
EXIT_UNREACHABLE = 4  # no answer from the agent at all


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
    if isinstance(payload, dict):
        # link and LinK v2 say {"error": ...}; LinK v2 also answers {"msg": ...} on some routes.
        error = payload.get("error", payload.get("msg"))
        if isinstance(error, str):
            # LinK's 404 is {"resource": "IP", "error": "not found"}: say "IP not found".
            if isinstance(payload.get("resource"), str):
                error = f"{payload['resource']} {error}"
            return f"{clean(error)} (HTTP {status})"
    return f"the agent answered HTTP {status} {clean(reason)}"


def clean(value: object) -> str:
    """Text from the network, made safe for a terminal (no escape sequences)."""
    text = "-" if value is None else str(value)
    return "".join(c if c.isprintable() else "?" for c in text)
