"""The API process's side of the supervisor Pipe, against a real multiprocessing Pipe, and
`run_api` as a real process."""
from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import pytest

from link.vocabulary import protocol
from link.api.server import EXIT_CANNOT_LISTEN, EXIT_OK, SupervisorClient, run_api
from link.config import Config, load
from tests.unit.api_fakes import ShufflingSupervisor, run_in_threads


def test_50_threads_each_get_their_own_answers_back() -> None:
    api_end, supervisor_end = multiprocessing.Pipe()
    supervisor = ShufflingSupervisor(supervisor_end)
    supervisor.start()
    client = SupervisorClient(api_end, timeout=20)
    client.start()

    def one_user(index: int) -> None:
        ip = f"198.51.100.{index + 1}/32"
        added = client.call(protocol.AddIp(ip))
        assert isinstance(added, protocol.Done) and added.result["ip"] == ip
        vip_id = added.result["id"]
        got = client.call(protocol.GetIp(vip_id))
        assert isinstance(got, protocol.Done) and got.result["id"] == vip_id and got.result["ip"] == ip
        deleted = client.call(protocol.DeleteIp(vip_id))
        assert deleted == protocol.Done(deleted.id, None)
        gone = client.call(protocol.GetIp(vip_id))
        assert isinstance(gone, protocol.Refused) and gone.status == 404

    errors = run_in_threads(50, one_user)
    assert not errors, errors[0]
    assert supervisor.logic.ips == {}
    assert len(supervisor.answer_order) == 200
    # The test only proves something if answers really came back out of order.
    assert supervisor.answer_order != sorted(supervisor.answer_order)
    supervisor_end.close()


def test_requests_cross_as_the_protocol_encodes_them_and_ids_are_the_clients() -> None:
    api_end, supervisor_end = multiprocessing.Pipe()
    client = SupervisorClient(api_end, timeout=5)
    client.start()
    request = protocol.ListIps()
    seen: list[dict[str, Any]] = []

    def answer_two() -> None:
        for _ in range(2):
            message = supervisor_end.recv()
            seen.append(message)
            supervisor_end.send({"id": message["id"], "ok": True, "result": []})

    thread = threading.Thread(target=answer_two)
    thread.start()
    assert client.call(request) == protocol.Done(1, [])
    assert client.call(request) == protocol.Done(2, [])
    thread.join(5)
    assert seen == [{"op": "list", "id": 1}, {"op": "list", "id": 2}]


def test_no_answer_in_time_is_a_timeout_and_a_late_answer_is_dropped() -> None:
    api_end, supervisor_end = multiprocessing.Pipe()
    client = SupervisorClient(api_end, timeout=0.2)
    client.start()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="'list'"):
        client.call(protocol.ListIps())
    assert time.monotonic() - started < 5
    late = supervisor_end.recv()
    # The late answer, a message without id, then the answer to the next request.
    supervisor_end.send({"id": late["id"], "ok": True, "result": ["late"]})
    supervisor_end.send({"ok": True, "result": "no id"})

    def answer_next() -> None:
        message = supervisor_end.recv()
        supervisor_end.send({"id": message["id"], "ok": True, "result": ["fresh"]})

    thread = threading.Thread(target=answer_next)
    thread.start()
    assert client.call(protocol.ListIps()) == protocol.Done(2, ["fresh"])
    thread.join(5)


def test_a_malformed_answer_fails_its_request_only() -> None:
    api_end, supervisor_end = multiprocessing.Pipe()
    client = SupervisorClient(api_end, timeout=5)
    client.start()

    def answer_two() -> None:
        first = supervisor_end.recv()
        supervisor_end.send({"id": first["id"], "ok": False, "status": "404", "error": "odd"})
        second = supervisor_end.recv()
        supervisor_end.send({"id": second["id"], "ok": True, "result": ["fine"]})

    thread = threading.Thread(target=answer_two)
    thread.start()
    with pytest.raises(protocol.ProtocolError, match="'status'"):
        client.call(protocol.ListIps())
    assert client.call(protocol.ListIps()) == protocol.Done(2, ["fine"])
    thread.join(5)


def test_the_supervisor_going_away_fails_waiting_and_later_calls() -> None:
    api_end, supervisor_end = multiprocessing.Pipe()
    closed = threading.Event()
    client = SupervisorClient(api_end, timeout=10, on_closed=closed.set)
    client.start()
    errors: list[BaseException] = []

    def waiting() -> None:
        try:
            client.call(protocol.DeleteIp("vip-x"))
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=waiting)
    waiter.start()
    supervisor_end.recv()  # the request arrived; the supervisor now dies without answering
    supervisor_end.close()
    waiter.join(5)
    assert closed.wait(5)
    assert len(errors) == 1 and isinstance(errors[0], ConnectionError)
    assert client.closed
    with pytest.raises(ConnectionError):
        client.call(protocol.ListIps())


# --- run_api as a process -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_config(port: int, **env: str) -> Config:
    return load(
        {"INTERFACE": "lo", "PORT": str(port), "BIND_ADDRESS": "127.0.0.1", "ETCD_HOSTS": "http://127.0.0.1:2379", **env},
        check_interface=False,
    )


def start_api(config: Config) -> tuple[multiprocessing.process.BaseProcess, Connection]:
    # spawn: the child holds only its own end of the Pipe, as the supervisor's fork arranges.
    ctx = multiprocessing.get_context("spawn")
    supervisor_end, api_end = ctx.Pipe()
    process = ctx.Process(target=run_api, args=(api_end, config, "9.9.9"), daemon=True)
    process.start()
    api_end.close()
    return process, supervisor_end


def http_get(port: int, path: str, deadline: float = 20.0) -> tuple[int, Any]:
    """GET on 127.0.0.1, retried while the server is not listening yet."""
    stop = time.monotonic() + deadline
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        except ConnectionRefusedError:
            if time.monotonic() > stop:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


def stop_process(process: multiprocessing.process.BaseProcess) -> None:
    if process.is_alive():
        process.kill()
    process.join(5)


def test_run_api_serves_through_the_pipe_and_exits_when_the_supervisor_is_gone() -> None:
    port = free_port()
    process, supervisor_end = start_api(api_config(port))
    supervisor = ShufflingSupervisor(supervisor_end)
    supervisor.start()
    try:
        assert http_get(port, "/version") == (200, {"version": "9.9.9"})
        assert http_get(port, "/ips") == (200, {"ips": []})
        supervisor_end.close()
        process.join(10)
        assert process.exitcode == EXIT_OK
    finally:
        stop_process(process)


def test_run_api_exits_on_sigterm() -> None:
    port = free_port()
    process, supervisor_end = start_api(api_config(port))
    try:
        assert http_get(port, "/version")[0] == 200
        assert process.pid is not None
        os.kill(process.pid, signal.SIGTERM)
        process.join(10)
        assert process.exitcode == EXIT_OK
    finally:
        stop_process(process)
        supervisor_end.close()


def test_run_api_exits_non_zero_with_one_line_when_the_port_is_taken(capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, supervisor_end = start_api(api_config(port))
        try:
            process.join(20)
            assert process.exitcode == EXIT_CANNOT_LISTEN
        finally:
            stop_process(process)
            supervisor_end.close()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "cannot listen" in line]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], err
