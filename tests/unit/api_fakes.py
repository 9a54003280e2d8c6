"""Fakes for the API tests: the supervisor's side of the pipe (every request of link.vocabulary.protocol,
called directly or behind a real Pipe) and a WSGI request helper that needs no socket."""
from __future__ import annotations

import dataclasses
import io
import json
import random
import threading
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Mapping
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

from link.vocabulary import protocol
from link.vocabulary.vip import VipSpec


class FakeSupervisor:
    """Answers `call(request)` like the supervisor does (link.vocabulary.protocol's requests and answers);
    `requests` keeps each request as it would cross the pipe."""

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

    def __call__(self, request: protocol.Message) -> protocol.Answer:
        with self._lock:
            self.requests.append(protocol.encode(request))  # what would cross the pipe
            if self.fail_with is not None:
                raise self.fail_with
            result = self._dispatch(request)
            return result if isinstance(result, protocol.Refused) else protocol.Done(0, result)

    def _found(self, vip_id: str) -> dict[str, Any]:
        found = self.ips.get(vip_id)
        if found is None:
            raise _Refusal(404, "not found")
        return found

    def _get(self, request: protocol.GetIp) -> Any:
        return self._found(request.vip_id)

    def _events(self, request: protocol.GetEvents) -> Any:
        return list(self.events.get(self._found(request.vip_id)["id"], []))

    def _update(self, request: protocol.UpdateIp) -> Any:
        found = self._found(request.vip_id)
        self._apply(found, request.settings)
        return found

    def _delete(self, request: protocol.DeleteIp) -> Any:
        del self.ips[self._found(request.vip_id)["id"]]
        return None

    def _failover(self, request: protocol.FailoverIp) -> Any:
        found = self._found(request.vip_id)
        error = self.failover_errors.get(found["id"])
        if error is not None:
            raise _Refusal(409, error)
        found["status"], found["holder"] = "STANDBY", "h2"
        return None

    def _add(self, request: protocol.AddIp) -> Any:
        if any(ip["ip"] == request.ip for ip in self.ips.values()):
            raise _Refusal(409, f"ip {request.ip} is already configured on this host")
        vip_id = f"vip-{uuid.uuid4()}"
        created = ip_object(vip_id, request.ip, fault_policy=self.default_fault_policy)
        self._apply(created, request.settings)
        self.ips[vip_id] = created
        return created

    def _dispatch(self, request: protocol.Message) -> Any:
        # The supervisor's dispatch style (link.vocabulary.protocol.Dispatcher): one handler per request.
        handle = protocol.Dispatcher(protocol.Family.REQUEST, {
            protocol.ListIps: lambda _: list(self.ips.values()),
            protocol.GetMetrics: lambda _: self.metrics_answer(),
            protocol.ApiListening: lambda _: None,
            protocol.WirePeers: lambda _: None,
            protocol.AddIp: self._add, protocol.GetIp: self._get, protocol.GetEvents: self._events,
            protocol.UpdateIp: self._update, protocol.DeleteIp: self._delete, protocol.FailoverIp: self._failover,
        })
        try:
            return handle(request)
        except _Refusal as refusal:
            return protocol.Refused(0, refusal.status, refusal.error)

    def _apply(self, ip: dict[str, Any], request: Mapping[str, Any]) -> None:
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
        if "notify" in request:
            ip["notify"] = list(request["notify"])
        if request.get("follow"):  # as the records show it: the value, or this fake agent's HOSTNAME
            ip["follow"], ip["follow_value"] = request["follow"], request.get("follow_value") or "h1"
        if "binder" in request:  # as the supervisor shows it: secrets masked
            spec = VipSpec(ip["id"], ip["ip"], binder=request["binder"], binder_settings=request.get(request["binder"]))
            ip.update(spec.public_binder())


class _Refusal(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


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
        "notify": [],
        "follow": None,
        "follow_value": None,
        "binder": "arp",
        "binder_status": {"ok": True, "action": None, "error": None, "attempts": 0, "since": None},
        "foreign_claim": None,
        "worker": {"pid": 1234, "state": "RUNNING", "restarts": 0, "error": None},
        "wire": None,
    }


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
        held: list[tuple[int, protocol.Message]] = []
        while True:
            batch: list[tuple[int, protocol.Message]] = []
            try:
                while self.conn.poll(0.02):
                    batch.append(protocol.decode_request(self.conn.recv()))
            except (EOFError, OSError):
                return
            self.sent_order += [request_id for request_id, _ in batch]
            deletes = [m for m in batch if isinstance(m[1], protocol.DeleteIp)]
            now = held + [m for m in batch if not isinstance(m[1], protocol.DeleteIp)]
            held = deletes
            self.random.shuffle(now)
            for request_id, request in now:
                answer = protocol.encode(dataclasses.replace(self.logic(request), id=request_id))
                self.answer_order.append(request_id)
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
