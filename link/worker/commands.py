"""What a worker does with each command the supervisor sends it down the pipe.

One handler per command of link.vocabulary.protocol's supervisor → worker family; the
SupervisorChannel (link.worker.supervisor_link) calls them and sends back what they return
(an answer, for the commands the API waits on). They act on the worker through the narrow
`CommandTarget` below, the part of link.worker.main.Worker they need, so this module does
not import the worker (no cycle) and a test can drive them on a stand-in.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from link import logs
from link.config import Config
from link.etcd.port import EtcdError
from link.vocabulary.protocol import (CandidatesDone, FailoverDone, HandOver, LogLevel, Message, Priority, ReadCandidates,
                                      Reannounce, Settings, Stop, WireView)
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import Event, State
from link.worker.election import Election
from link.worker.fsm import StateMachine
from link.worker.health import HealthJudge, HealthMonitor
from link.worker.wire_policy import WirePolicy

logger = logging.getLogger(__name__)


class CommandTarget(Protocol):
    """The worker as the handlers see it."""

    config: Config
    vip: str
    spec: VipSpec
    holder: str | None
    election: Election | None
    fsm: StateMachine
    health: HealthMonitor
    judge: HealthJudge
    wire: WirePolicy

    def request_stop(self, why: str) -> None: ...

    def step_down(self, reason: str) -> None: ...

    def report(self, event: Event | None = None, reason: str = "") -> None: ...

    def ensure_bound(self, force_announce: bool = False, reason: str = "") -> None: ...

    def check_interval(self, spec: VipSpec) -> float: ...

    def look_now(self) -> None: ...

    def recover(self, event: Event, reason: str) -> None: ...


class SupervisorCommands:
    def __init__(self, worker: CommandTarget) -> None:
        self.worker = worker

    def table(self) -> dict[type[Message], Callable[[Any], Message | None]]:
        """The handler of each command, for the SupervisorChannel's dispatcher."""
        w = self.worker
        return {
            Stop: lambda _: w.request_stop("asked by the supervisor"), Settings: self.settings,
            LogLevel: lambda command: logs.set_level(command.level), Priority: self.priority,
            ReadCandidates: self.read_candidates, HandOver: self.hand_over, WireView: lambda command: w.wire.on_view(command),
            Reannounce: self.reannounce,
        }

    def hand_over(self, command: HandOver) -> FailoverDone:
        """POST /ips/<id>/failover: give the VIP to another host; answered with an HTTP status.

        Unbind first, then free the lock: there is never a moment with two holders, and the
        standbys' watch fires on the delete, so the moment with none is a few milliseconds.
        """
        w = self.worker
        assert w.election is not None
        if w.spec.follow:  # the key's owner moves it, not this host (link.worker.follow)
            return FailoverDone(command.request, 409, f"{w.vip} follows {w.spec.follow}: it moves when that key names "
                                "another host (with Patroni: patronictl switchover)")
        if w.fsm.state is not State.ACTIVATED:
            held_by = f"; {w.holder} holds it" if w.holder and w.holder != w.config.hostname else ""
            return FailoverDone(command.request, 409, f"this host does not hold {w.vip} (it is {w.fsm.state.value}"
                                f"{held_by}): ask the holder")
        try:
            others = w.election.competitors()
        except EtcdError as exc:
            return FailoverDone(command.request, 503, f"cannot ask etcd which hosts compete for {w.vip}: {exc}")
        if not others:
            return FailoverDone(command.request, 409, f"no other host competes for {w.vip}: nobody would take it over")
        w.step_down(f"failover requested: handing over to {' or '.join(others)}")
        return FailoverDone(command.request, 204, "")

    def reannounce(self, command: Reannounce) -> None:
        if self.worker.fsm.state is State.ACTIVATED:
            self.worker.ensure_bound(force_announce=True, reason=command.reason)

    def priority(self, command: Priority) -> None:
        """The host's priority changed (SIGUSR1/SIGUSR2/SIGHUP); a VIP's own priority wins."""
        w = self.worker
        assert w.election is not None
        host_priority = command.priority
        if w.spec.priority is not None or w.election.priority == host_priority:
            return
        logger.info("%s: priority %d -> %d", w.vip, w.election.priority, host_priority)
        w.election.priority = host_priority
        w.report(None, f"priority is now {host_priority}")
        w.look_now()  # judge the election again with the new priority now

    def read_candidates(self, command: ReadCandidates) -> CandidatesDone:
        election = self.worker.election
        assert election is not None
        try:
            return CandidatesDone(command.request, [c.to_api() for c in election.candidates()], "")
        except EtcdError as exc:
            return CandidatesDone(command.request, [], f"cannot read the candidates from etcd: {exc}")

    def settings(self, command: Settings) -> None:
        """New checks apply at once; the VIP stays bound while they pass. An update that leaves the
        checks alone (a notify program, say) does not restart them."""
        w = self.worker
        checks_before = (w.spec.checks, w.check_interval(w.spec))
        w.spec = VipSpec.from_json({**w.spec.to_json(), **command.spec})
        if (w.spec.checks, w.check_interval(w.spec)) != checks_before:
            w.health.replace(list(w.spec.checks), w.check_interval(w.spec))
            logger.info("%s: health checks replaced (%d check(s))", w.vip, len(w.spec.checks))
        else:
            logger.info("%s: settings updated (%s), health checks unchanged", w.vip, ", ".join(sorted(command.spec)))
        if not w.spec.checks and w.judge.failing:
            w.judge.reset()
            w.recover(Event.HEALTH_CHECK_SUCCESS, "health checks removed")  # FAILING still if a carrier is lost
