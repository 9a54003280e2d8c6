"""Fakes for the API tests: the supervisor's side of the pipe (every op over a dict, called
directly or behind a real Pipe) and a WSGI request helper that needs no socket."""
from __future__ import annotations

import io
import json
import random
import threading
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator


class FakeSupervisor:
    """Answers `call(request)` like the supervisor does (docs/ARCHITECTURE.md, "Pipe protocol")."""

    def __init__(self, *, default_fault_policy: str = "activate") -> None:
        self.ips: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        # Set to an exception instance to make every call raise it (a supervisor that is gone).
        self.fail_with: BaseException | None = None
        # The answer to `failover` for each id; absent means success (None).
        self.failover_errors: dict[str, str] = {}
        self.default_fault_policy = default_fault_policy
        # The `events` answer per VIP id (absent: none yet), and per-VIP worker numbers for `metrics`.
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.worker_metrics: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def metrics_answer(self) -> dict[str, Any]:
        """The supervisor's `metrics` result for the VIPs this fake holds."""
        vips = [{"id": ip["id"], "ip": ip["ip"], "status": ip["status"], "since": 1700000000.0,
                 "worker_state": ip["worker"]["state"], "restarts": ip["worker"]["restarts"],
                 "metrics": self.worker_metrics.get(ip["id"], {})} for ip in self.ips.values()]
        return {"workers": sum(1 for ip in self.ips.values() if ip["worker"]["pid"] is not None), "vips": vips}

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(dict(request))
            if self.fail_with is not None:
                raise self.fail_with
            op = request["op"]
            if op == "list":
                return {"ok": True, "result": list(self.ips.values())}
            if op == "add":
                return self._add(request)
            if op == "metrics":
                return {"ok": True, "result": self.metrics_answer()}
            vip_id = request.get("vip_id")
            found = self.ips.get(vip_id) if isinstance(vip_id, str) else None
            if op not in ("get", "update", "delete", "failover", "events"):
                return {"ok": False, "status": 400, "error": f"unknown operation {op!r}"}
            if found is None:
                return _not_found(str(vip_id))
            if op == "get":
                return {"ok": True, "result": found}
            if op == "events":
                return {"ok": True, "result": list(self.events.get(found["id"], []))}
            if op == "update":
                self._apply(found, request)
                return {"ok": True, "result": found}
            if op == "delete":
                del self.ips[found["id"]]
                return {"ok": True, "result": None}
            error = self.failover_errors.get(found["id"])
            if error is not None:
                return {"ok": False, "status": 409, "error": error}
            found["status"], found["holder"] = "STANDBY", "h2"
            return {"ok": True, "result": None}

    def _add(self, request: dict[str, Any]) -> dict[str, Any]:
        if any(ip["ip"] == request["ip"] for ip in self.ips.values()):
            return {"ok": False, "status": 409, "error": f"ip {request['ip']} is already configured on this host"}
        vip_id = f"vip-{uuid.uuid4()}"
        created = ip_object(vip_id, request["ip"], fault_policy=self.default_fault_policy)
        self._apply(created, request)
        self.ips[vip_id] = created
        return {"ok": True, "result": created}

    def _apply(self, ip: dict[str, Any], request: dict[str, Any]) -> None:
        # As the supervisor's records: seconds as a float, "" meaning the agent's policy.
        if "checks" in request:
            ip["checks"] = list(request["checks"])
        if "healthcheck_interval" in request:
            ip["healthcheck_interval"] = float(request["healthcheck_interval"])
        if "fault_policy" in request:
            ip["fault_policy"] = request["fault_policy"] or self.default_fault_policy
        if "priority" in request:
            ip["priority"] = 10 if request["priority"] is None else request["priority"]
        if "preempt" in request:
            ip["preempt"] = True if request["preempt"] is None else request["preempt"]
        if "binder" in request:  # as VipSpec.public_binder(): the webhook's secret masked
            ip["binder"] = request["binder"]
            if request.get("command") is not None:
                ip["command"] = dict(request["command"])
            if request.get("webhook") is not None:
                ip["webhook"] = {**request["webhook"], "secret": "***"}


def ip_object(vip_id: str, ip: str, status: str = "BOOTING", *, fault_policy: str = "activate") -> dict[str, Any]:
    return {
        "id": vip_id,
        "ip": ip,
        "status": status,
        "since": "2026-11-22T01:02:03.456Z",
        "holder": None,
        "checks": [],
        "healthcheck_interval": 0.0,
        "fault_policy": fault_policy,
        "priority": 10,
        "preempt": True,
        "binder": "arp",
        "binder_status": {"ok": True, "action": None, "error": None, "attempts": 0, "since": None},
        "worker": {"pid": 1234, "state": "RUNNING", "restarts": 0, "error": None},
    }


def _not_found(vip_id: str) -> dict[str, Any]:
    return {"ok": False, "status": 404, "error": "not found"}


class ShufflingSupervisor(threading.Thread):
    """The supervisor's end of a real Pipe: answers whatever has arrived in random order, and
    holds each `delete` back one round, as the real one waits for the worker before answering."""

    def __init__(self, conn: Connection, seed: int = 7) -> None:
        super().__init__(name="fake-supervisor", daemon=True)
        self.conn = conn
        self.logic = FakeSupervisor()
        self.random = random.Random(seed)
        self.sent_order: list[int] = []
        self.answer_order: list[int] = []

    def run(self) -> None:
        held: list[dict[str, Any]] = []
        while True:
            batch: list[dict[str, Any]] = []
            try:
                while self.conn.poll(0.02):
                    batch.append(self.conn.recv())
            except (EOFError, OSError):
                return
            self.sent_order += [m["id"] for m in batch]
            deletes = [m for m in batch if m["op"] == "delete"]
            now = held + [m for m in batch if m["op"] != "delete"]
            held = deletes
            self.random.shuffle(now)
            for message in now:
                answer = {**self.logic({k: v for k, v in message.items() if k != "id"}), "id": message["id"]}
                self.answer_order.append(message["id"])
                try:
                    self.conn.send(answer)
                except OSError:
                    return


def run_in_threads(count: int, body: Callable[[int], None]) -> list[BaseException]:
    """Run body(0..count-1) on as many threads at once; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            body(index)
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(t.is_alive() for t in threads), "a request never got its answer"
    return errors


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
