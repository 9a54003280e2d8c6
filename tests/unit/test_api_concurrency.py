"""The whole API process stack under 50 concurrent HTTP clients: waitress on 127.0.0.1, the
bottle app, the real SupervisorClient over a real multiprocessing Pipe, and a fake supervisor
that answers out of order and holds deletes back. Every answer must be the one to its request."""
from __future__ import annotations

import http.client
import json
import multiprocessing
import threading
from typing import Any, Iterator

import pytest
import waitress

from link.api import make_app
from link.api.server import API_THREADS, SupervisorClient
from tests.unit.api_fakes import ShufflingSupervisor, run_in_threads

CLIENTS = 50


class Stack:
    def __init__(self) -> None:
        api_end, self.supervisor_end = multiprocessing.Pipe()
        self.supervisor = ShufflingSupervisor(self.supervisor_end, seed=11)
        self.client = SupervisorClient(api_end, timeout=20)
        # The same thread count as the agent's API process: 50 clients queue for 8 threads.
        self.server = waitress.create_server(
            make_app(self.client.call, version="1.0"), host="127.0.0.1", port=0, threads=API_THREADS,
            clear_untrusted_proxy_headers=True,
        )
        self.port: int = self.server.effective_port  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)

    def start(self) -> None:
        self.supervisor.start()
        self.client.start()
        self.thread.start()

    def stop(self) -> None:
        # Worker threads first: a task finishing after close() would write to the closed trigger.
        self.server.task_dispatcher.shutdown()  # type: ignore[union-attr]
        self.server.close()
        self.thread.join(5)
        self.supervisor_end.close()

    def request(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()


@pytest.fixture
def stack() -> Iterator[Stack]:
    the_stack = Stack()
    the_stack.start()
    yield the_stack
    the_stack.stop()


def test_50_http_clients_each_get_the_answers_to_their_own_requests(stack: Stack) -> None:
    start = threading.Barrier(CLIENTS, timeout=20)

    def one_client(index: int) -> None:
        # Each client its own VIP: the two documentation ranges give room for 50.
        ip = f"198.51.100.{index + 1}/32" if index < 25 else f"203.0.113.{index + 1}/32"
        start.wait()  # all 50 at once, so requests really overlap in the pipe
        status, created = stack.request("POST", "/ips", {"ip": ip, "healthcheck_interval": index % 7})
        assert status == 201, created
        assert created["ip"] == ip and created["healthcheck_interval"] == index % 7
        vip_id = created["id"]
        status, got = stack.request("GET", f"/ips/{vip_id}")
        assert status == 200 and got["ip"]["id"] == vip_id and got["ip"]["ip"] == ip
        status, updated = stack.request("PATCH", f"/ips/{vip_id}", {"healthchecks": [{"type": "TCP", "host": ip[:-3], "port": 1000 + index}]})
        assert status == 200 and updated["id"] == vip_id and updated["checks"][0]["port"] == 1000 + index
        status, body = stack.request("DELETE", f"/ips/{vip_id}")
        assert (status, body) == (204, None)
        status, body = stack.request("GET", f"/ips/{vip_id}")
        assert (status, body) == (404, {"resource": "IP", "error": "not found"})

    errors = run_in_threads(CLIENTS, one_client)
    assert not errors, errors[0]
    assert stack.supervisor.logic.ips == {}
    assert len(stack.supervisor.answer_order) == CLIENTS * 5
    # The test only proves something if answers really came back in another order than asked.
    assert stack.supervisor.answer_order != stack.supervisor.sent_order
    assert stack.request("GET", "/ips") == (200, {"ips": []})
