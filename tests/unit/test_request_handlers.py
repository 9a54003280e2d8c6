"""The supervisor's request handlers alone: no arbiter, no pipe, no process; a fake Host
(link.supervisor.requests.Host) records what they ask of the arbiter."""
from __future__ import annotations

import types
from typing import Any

import pytest

from link.vocabulary import protocol
from link.config import load
from link.supervisor.worker_states import WorkerState
from link.supervisor.records import VipRecord
from link.supervisor.requests import RequestHandlers
from link.supervisor.store import StoreError, VipStore
from link.vocabulary.vip import VipSpec

VIP = "198.51.100.50/32"


class FakeHost:
    def __init__(self, store: Any) -> None:
        self.config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": "/nonexistent"}, check_interface=False)
        self.store = store
        self.vips: dict[str, VipRecord] = {}
        self.priority = 10
        self.stopping = False
        self.answers: list[protocol.Answer] = []
        self.sent: list[tuple[str, protocol.Message]] = []
        self.stopped: list[str] = []
        self.titles = 0
        self.pids = iter(range(2000, 3000))

    def answer(self, reply: protocol.Answer) -> None:
        self.answers.append(reply)

    def send(self, record: VipRecord, command: protocol.Message) -> bool:
        if record.conn is None or record.conn.closed:
            return False
        self.sent.append((record.id, command))
        return True

    def spawn_worker(self, record: VipRecord) -> None:
        record.pid, record.conn = next(self.pids), types.SimpleNamespace(closed=False)
        record.worker_state = WorkerState.RUNNING

    def stop_worker(self, record: VipRecord) -> None:
        self.stopped.append(record.id)

    def vips_changed(self) -> None:
        self.titles += 1

    def wire_peers(self, endpoints: list[dict[str, Any]]) -> None:
        self.wire_endpoints = endpoints

    def wire_metrics(self) -> dict[str, Any] | None:
        return None


class BrokenStore:
    def save(self, vips: list[VipSpec]) -> None:
        raise StoreError("cannot write /state/vips.json: No space left on device")


@pytest.fixture
def host(tmp_path: Any) -> FakeHost:
    return FakeHost(VipStore(str(tmp_path)))


def ask(handlers: RequestHandlers, host: FakeHost, request: protocol.Message, request_id: int = 1) -> list[protocol.Answer]:
    """Hand one request over as it arrives on the pipe; the answers given so far."""
    handlers.handle(protocol.encode(request, request_id))
    return host.answers


def added(handlers: RequestHandlers, host: FakeHost) -> VipRecord:
    ask(handlers, host, protocol.AddIp(VIP, {"checks": []}))
    return next(iter(host.vips.values()))


def test_add_persists_then_spawns_and_answers_the_ip_object(host: FakeHost) -> None:
    handlers = RequestHandlers(host)
    record = added(handlers, host)
    assert [spec.ip for spec in host.store.load()] == [VIP] and record.pid is not None and host.titles == 1
    [answer] = host.answers
    assert isinstance(answer, protocol.Done) and answer.id == 1 and answer.result["id"] == record.id
    assert answer.result["status"] == "BOOTING" and answer.result["worker"]["state"] == WorkerState.RUNNING
    ask(handlers, host, protocol.AddIp(VIP), 2)
    assert host.answers[-1] == protocol.Refused(2, 409, f"ip {VIP} is already configured on this host as {record.id} ({VIP})")


def test_an_add_that_cannot_be_written_changes_nothing() -> None:
    host = FakeHost(BrokenStore())
    handlers = RequestHandlers(host)
    assert ask(handlers, host, protocol.AddIp(VIP)) == [
        protocol.Refused(1, 503, "cannot write /state/vips.json: No space left on device")]
    assert host.vips == {} and host.titles == 0


def test_get_waits_for_the_workers_candidates(host: FakeHost) -> None:
    handlers = RequestHandlers(host)
    record = added(handlers, host)
    ask(handlers, host, protocol.GetIp(record.id), 5)
    assert host.sent[-1] == (record.id, protocol.ReadCandidates(5)) and len(host.answers) == 1
    handlers.candidates_done(protocol.CandidatesDone(5, [], "cannot read the candidates from etcd: down"), record)
    answer = host.answers[-1]
    assert isinstance(answer, protocol.Done) and answer.id == 5 and answer.result["candidates"] == []
    assert answer.result["candidates_error"] == "cannot read the candidates from etcd: down"
    handlers.candidates_done(protocol.CandidatesDone(5, [], ""), record)  # answered already: nothing more
    assert len(host.answers) == 2


def test_failover_is_answered_with_what_the_worker_says(host: FakeHost) -> None:
    handlers = RequestHandlers(host)
    record = added(handlers, host)
    ask(handlers, host, protocol.FailoverIp(record.id), 6)
    ask(handlers, host, protocol.FailoverIp(record.id), 7)
    assert host.sent[-2:] == [(record.id, protocol.HandOver(6)), (record.id, protocol.HandOver(7))]
    handlers.failover_done(protocol.FailoverDone(6, 409, "no other host competes for it"), record)
    assert host.answers[-1] == protocol.Refused(6, 409, "no other host competes for it")
    handlers.worker_gone(record)  # the worker died before answering the second
    assert host.answers[-1] == protocol.Refused(7, 503, f"the worker of {VIP} exited during the failover")


def test_delete_is_written_first_and_answered_once_the_worker_is_gone(host: FakeHost) -> None:
    handlers = RequestHandlers(host)
    record = added(handlers, host)
    ask(handlers, host, protocol.DeleteIp(record.id), 8)
    assert host.store.load() == [] and host.stopped == [record.id] and record.worker_state == WorkerState.STOPPING
    assert len(host.answers) == 1  # not yet: the worker still holds the VIP
    handlers.finish_delete(record)
    assert host.answers[-1] == protocol.Done(8, None) and host.vips == {}


def test_unknown_ids_malformed_requests_and_a_stopping_agent_are_refused(host: FakeHost) -> None:
    handlers = RequestHandlers(host)
    ask(handlers, host, protocol.GetEvents("vip-nope"), 9)
    assert host.answers[-1] == protocol.Refused(9, 404, "not found")
    handlers.handle({"op": "update", "id": 10, "checks": []})
    assert host.answers[-1] == protocol.Refused(10, 400, "API process → supervisor 'update': field 'vip_id' is missing")
    handlers.handle({"op": "list"})  # no id: nobody to answer, nothing sent
    assert len(host.answers) == 2
    host.stopping = True
    ask(handlers, host, protocol.ListIps(), 11)
    assert host.answers[-1] == protocol.Refused(11, 503, "the agent is shutting down")
