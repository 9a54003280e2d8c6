"""HTTP to a server that listens inside a namespace: the TCP socket is made inside it."""
from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

from . import netns


class _NsConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns = ns

    def connect(self) -> None:
        self.sock = netns.connect_in(self._ns, self.host, self.port, self.timeout)


@dataclass
class Response:
    status: int
    body: Any  # decoded JSON, or the text when it is not JSON, or None when empty
    headers: dict[str, str]

    def __repr__(self) -> str:
        return f"<{self.status} {self.body!r}>"


def request(ns: str, host: str, port: int, method: str, path: str, body: Any = None,
            raw: bytes | None = None, timeout: float = 5.0, headers: dict[str, str] | None = None) -> Response:
    """One request on a fresh connection; `body` is sent as JSON, `raw` as it is."""
    conn = _NsConnection(ns, host, port, timeout)
    try:
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        text = payload.decode("utf-8", "replace")
        decoded: Any = None
        if text:
            try:
                decoded = json.loads(text)
            except ValueError:
                decoded = text
        return Response(resp.status, decoded, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()
