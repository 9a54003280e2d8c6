"""The worker's end of its pipe alone (link.worker.supervisor_link.SupervisorChannel): a real
Pipe, handlers that record what they get, no Worker."""
from __future__ import annotations

import logging
from multiprocessing import Pipe
from typing import Any

import pytest

from link.vocabulary import protocol
from link.worker.supervisor_link import GONE, SupervisorChannel


class Recorder:
    def __init__(self) -> None:
        self.got: list[protocol.Message] = []
        self.gone: list[str] = []

    def handlers(self) -> dict[type[protocol.Message], Any]:
        table: dict[type[protocol.Message], Any] = {cls: self.got.append for cls in protocol.messages(protocol.Family.COMMAND)}
        # The two commands that ask for an answer get one, as the Worker's handlers give.
        table[protocol.ReadCandidates] = lambda c: protocol.CandidatesDone(c.request, [], "")
        table[protocol.HandOver] = lambda c: protocol.FailoverDone(c.request, 409, "no other host competes")
        return table


def channel() -> tuple[SupervisorChannel, Any, Recorder]:
    ours, theirs = Pipe()
    recorder = Recorder()
    return SupervisorChannel(theirs, recorder.handlers(), recorder.gone.append), ours, recorder


def test_commands_reach_their_handlers_and_answers_go_back() -> None:
    link, supervisor, recorder = channel()
    for command in (protocol.Priority(7), protocol.Settings({"checks": []}), protocol.HandOver(3), protocol.Stop()):
        supervisor.send(protocol.encode(command))
    link.read()
    assert recorder.got == [protocol.Priority(7), protocol.Settings({"checks": []}), protocol.Stop()]
    assert supervisor.recv() == {"type": "failover_done", "request": 3, "status": 409, "error": "no other host competes"}
    assert not supervisor.poll() and recorder.gone == []


def test_a_malformed_command_is_dropped_and_the_next_is_handled(caplog: pytest.LogCaptureFixture) -> None:
    link, supervisor, recorder = channel()
    supervisor.send({"type": "priority", "priority": "high"})
    supervisor.send({"type": "candidates", "request": 4})
    with caplog.at_level(logging.ERROR):
        link.read()
    assert "'priority' is 'high'" in caplog.text
    assert protocol.decode(supervisor.recv(), protocol.Family.REPORT) == protocol.CandidatesDone(4, [], "")
    assert recorder.gone == []


def test_reports_cross_encoded() -> None:
    link, supervisor, _ = channel()
    link.send(protocol.StateReport("STANDBY", 1.5, event="demoted", previous="BOOTING"))
    wire = supervisor.recv()
    assert wire["type"] == "state" and wire["from"] == "BOOTING"
    assert protocol.decode(wire, protocol.Family.REPORT) == protocol.StateReport("STANDBY", 1.5, event="demoted",
                                                                                 previous="BOOTING")


def test_a_closed_pipe_means_the_supervisor_is_gone() -> None:
    link, supervisor, recorder = channel()
    supervisor.close()
    link.read()
    assert recorder.gone == [GONE]
    link.send(protocol.MetricsReport({}))
    assert recorder.gone == [GONE, GONE]
