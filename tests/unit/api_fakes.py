"""Fakes for the API tests: the supervisor's side of the pipe (list/get/add/delete over a
dict) and a WSGI request helper that needs no socket."""
from __future__ import annotations

import io
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator


class FakeSupervisor:
    """Answers `call(request)` like the supervisor does (docs/ARCHITECTURE.md, "Pipe protocol")."""

    def __init__(self) -> None:
        self.ips: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        # Set to an exception instance to make every call raise it (a supervisor that is gone).
        self.fail_with: BaseException | None = None
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(dict(request))
            if self.fail_with is not None:
                raise self.fail_with
            op = request["op"]
            if op == "list":
                return {"ok": True, "result": list(self.ips.values())}
            if op == "get":
                found = self.ips.get(request["vip_id"])
                return {"ok": True, "result": found} if found else _not_found(request["vip_id"])
            if op == "add":
                if any(ip["ip"] == request["ip"] for ip in self.ips.values()):
                    return {"ok": False, "status": 409, "error": f"{request['ip']} is already configured on this host"}
                vip_id = f"vip-{uuid.uuid4()}"
                self.ips[vip_id] = ip_object(vip_id, request["ip"])
                return {"ok": True, "result": self.ips[vip_id]}
            if op == "delete":
                if self.ips.pop(request["vip_id"], None) is None:
                    return _not_found(request["vip_id"])
                return {"ok": True, "result": None}
            return {"ok": False, "status": 400, "error": f"unknown op {op!r}"}


def ip_object(vip_id: str, ip: str, status: str = "BOOTING") -> dict[str, Any]:
    return {
        "id": vip_id,
        "ip": ip,
        "status": status,
        "since": "2026-11-22T01:02:03.456Z",
        "holder": None,
        "worker": {"pid": 1234, "state": "RUNNING", "restarts": 0, "error": None},
    }


def _not_found(vip_id: str) -> dict[str, Any]:
    return {"ok": False, "status": 404, "error": f"no IP with id {vip_id}"}


@dataclass
class WsgiResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def wsgi_request(
    app: Callable[..., Iterable[bytes]],
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
    *,
    validate: bool = True,
) -> WsgiResponse:
    """One request through the WSGI app, no socket; wsgiref's validator checks both sides
    keep to PEP 3333 (e.g. the app reads the body with a size, every answer has a Content-Type)."""
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body or b""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ.update(
        REQUEST_METHOD=method,
        PATH_INFO=path,
        QUERY_STRING="",
        REMOTE_ADDR="127.0.0.1",
        **{"wsgi.input": io.BytesIO(data), "wsgi.errors": io.StringIO()},
    )
    if data:
        environ["CONTENT_LENGTH"] = str(len(data))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    started: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started["status"], started["headers"] = status, response_headers
        return lambda chunk: None

    result = (validator(app) if validate else app)(environ, start_response)
    try:
        payload = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return WsgiResponse(
        status=int(started["status"].split()[0]),
        headers={name.lower(): value for name, value in started["headers"]},
        body=payload,
    )
