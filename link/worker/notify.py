"""Notify programs (keepalived's `notify`): a program told of every state change of the VIP.

The program is the VIP's own `notify` (an argv list) or, when it has none, the agent's NOTIFY;
it runs as `PROGRAM [ARGS...] VIP OLD NEW REASON` (VIP as the API names it, e.g.
198.51.100.50/32; OLD and NEW a state of link.vocabulary.vip_states, NEW also `RELEASED`
when the worker stops; REASON the sentence the worker logs). Same rules as every program
(link.scripts: SCRIPTS_DIR, SCRIPT_USER, checked again before each run) and the same way of
running it (link.worker.programs: vfork+exec, its own session, killed whole at its timeout).

The election never waits for it: the worker's loop only appends the transition to a queue;
one thread of this module runs the programs, one at a time, in the order of the transitions.
The thread is started at the first transition with a program to run: a VIP without notify
holds no extra thread. A backlog (a program slower than the VIP's changes) is bounded to
MAX_PENDING: the oldest waiting transition is dropped, logged and counted. What each run
became is handed back to the worker's loop (`take_results`), which counts it and reports the
failures as events on the VIP.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from link.config import Config
from link.scripts import ProgramPolicy, ScriptRefused
from link.vocabulary.protocol import Message, NotifyReport
from link.vocabulary.notify_words import RELEASED, NotifyOutcome
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import State
from link.worker.metrics import WorkerMetrics
from link.worker.programs import Finished, ProgramNotStarted, ProgramTimedOut, RunningProgram, run_program, summarize

logger = logging.getLogger(__name__)

MAX_PENDING = 16  # transitions waiting for their program; beyond, the oldest waiting is dropped
STOP_WAIT = 3.0  # at stop, the longest the worker waits for what is queued (the lock is given up already)

Runner = Callable[[ProgramPolicy, Sequence[str], Mapping[str, str], float, RunningProgram], Finished]


@dataclass(frozen=True)
class Transition:
    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class NotifyResult:
    outcome: NotifyOutcome
    program: str
    transition: Transition
    detail: str  # "exited 0", "exited 3: <output>", "timed out after 5s", why it was refused or dropped

    def sentence(self) -> str:
        t = self.transition
        return f"notify program {self.program} ({t.old} -> {t.new}): {self.detail}"


class NotifyQueue:
    """Runs each submitted transition's program on a thread of its own, in order."""

    def __init__(self, vip: str, vip_id: str, programs: ProgramPolicy, timeout: float, wake: Callable[[], None], *,
                 max_pending: int = MAX_PENDING, base_env: Mapping[str, str] | None = None,
                 run: Runner = run_program) -> None:
        self.vip, self.vip_id = vip, vip_id
        self._programs = programs
        self.timeout = timeout
        self._wake = wake
        self._max_pending = max_pending
        self._base_env = base_env
        self._run = run
        self._cond = threading.Condition()
        self._pending: collections.deque[tuple[tuple[str, ...], Transition]] = collections.deque()
        self._results: list[NotifyResult] = []
        self._deadline: float | None = None  # set by close(): nothing starts after it
        self._running = RunningProgram()
        self._busy = False  # a program of this queue runs now
        self._thread: threading.Thread | None = None

    # -- the worker's side ------------------------------------------------------------------
    def submit(self, argv: Sequence[str], transition: Transition) -> None:
        """Queue `argv` + the transition's arguments; never waits."""
        with self._cond:
            if self._deadline is not None:
                return  # closing: the worker's last transition is queued before close()
            if len(self._pending) >= self._max_pending:
                argv_dropped, dropped = self._pending.popleft()
                self._drop(argv_dropped, dropped, f"not run: {self._max_pending} transitions were waiting "
                           "(the program is slower than the VIP's changes)")
            self._pending.append((tuple(argv), transition))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="notify", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def take_results(self) -> list[NotifyResult]:
        """What the runs became since the last call, in order."""
        with self._cond:
            results, self._results = self._results, []
        return results

    def idle(self) -> bool:
        with self._cond:
            return not self._pending and not self._busy

    def close(self, wait: float = STOP_WAIT) -> None:
        """Let what is queued run for at most `wait` seconds, then kill the program still
        running and drop what waits (each logged)."""
        with self._cond:
            self._deadline = time.monotonic() + max(0.0, wait)
            thread = self._thread
            self._cond.notify_all()
        if thread is None:
            return
        thread.join(max(0.0, wait))
        if thread.is_alive():
            pid = self._running.kill()
            if pid is not None:
                logger.warning("%s: notify program %d still running at stop: killed (its process group)", self.vip, pid)
            thread.join(2.0)  # it reaps the program and drops the rest
        with self._cond:
            while self._pending:  # left by a thread that did not come back: said anyway
                argv, transition = self._pending.popleft()
                self._drop(argv, transition, "not run: the worker stopped")

    # -- the thread -------------------------------------------------------------------------
    def _drop(self, argv: tuple[str, ...], transition: Transition, why: str) -> None:
        """Called with the lock held."""
        result = NotifyResult(NotifyOutcome.DROPPED, argv[0], transition, why)
        logger.warning("%s: %s", self.vip, result.sentence())
        self._results.append(result)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and self._deadline is None:
                    self._cond.wait()
                if self._deadline is not None and (not self._pending or time.monotonic() >= self._deadline):
                    while self._pending:
                        argv, transition = self._pending.popleft()
                        self._drop(argv, transition, "not run: the worker stopped")
                    return
                argv, transition = self._pending.popleft()
                self._busy = True
            result = self._run_one(argv, transition)
            with self._cond:
                self._results.append(result)
                self._busy = False
            try:
                self._wake()
            except Exception:  # the wake-up pipe may be closed at the very end
                logger.debug("notify result not signalled", exc_info=True)

    def _run_one(self, argv: tuple[str, ...], transition: Transition) -> NotifyResult:
        program = argv[0]
        args = [*argv, self.vip, transition.old, transition.new, transition.reason]
        env = dict(os.environ if self._base_env is None else self._base_env)
        env.update({"LINK_VIP_ID": self.vip_id})
        try:
            done = self._run(self._programs, args, env, self.timeout, self._running)
        except ScriptRefused as exc:
            return self._log(NotifyResult(NotifyOutcome.REFUSED, program, transition, f"program refused, not run: {exc}"))
        except ProgramTimedOut as exc:
            return self._log(NotifyResult(NotifyOutcome.TIMED_OUT, program, transition, f"{exc}: killed (its process group)"))
        except ProgramNotStarted as exc:
            return self._log(NotifyResult(NotifyOutcome.FAILED, program, transition, str(exc)))
        except Exception as exc:  # a bug or an unexpected OSError: a failed run, never a dead thread
            return self._log(NotifyResult(NotifyOutcome.FAILED, program, transition, f"{type(exc).__name__}: {exc}"))
        output = summarize(done.output)
        detail = done.how() + (f": {output}" if output else "")
        return self._log(NotifyResult(NotifyOutcome.OK if done.returncode == 0 else NotifyOutcome.FAILED, program,
                                      transition, detail))

    def _log(self, result: NotifyResult) -> NotifyResult:
        logger.log(logging.INFO if result.outcome is NotifyOutcome.OK else logging.WARNING, "%s: %s", self.vip,
                   result.sentence())
        return result


class Notifier:
    """The worker's side: which program a transition runs (the VIP's own `notify`, read at each
    transition so a PATCH applies at once, else the agent's NOTIFY), and what the runs become:
    counted in the worker's metrics, each one that did not do its job an event on the VIP."""

    def __init__(self, config: Config, spec: Callable[[], VipSpec], wake: Callable[[], None]) -> None:
        self._config = config
        self._spec = spec
        first = spec()
        self.queue = NotifyQueue(first.ip, first.id, ProgramPolicy.from_config(config), config.notify_timeout, wake)

    def argv(self) -> tuple[str, ...]:
        return self._spec().notify or self._config.notify

    def changed(self, old: State, new: State, reason: str) -> None:
        """The state machine's on_change: queued, never waited for."""
        self.transition(old.value, new.value, reason)

    def transition(self, old: str, new: str, reason: str) -> None:
        argv = self.argv()
        if argv:
            self.queue.submit(argv, Transition(old, new, reason))

    def released(self, state: State, reason: str, wait: float = STOP_WAIT) -> None:
        """The worker stops (the VIP unbound here, its lock given up): the last transition,
        then what is queued runs for at most `wait` seconds."""
        self.transition(state.value, RELEASED, reason)
        self.queue.close(wait)

    def deliver(self, metrics: WorkerMetrics, send: Callable[[Message], object],
                snapshot: Callable[[], dict[str, Any]]) -> None:
        """From the worker's loop: count the runs done since the last call, report the failures."""
        for result in self.queue.take_results():
            metrics.notify_run(result.outcome.value)
            if result.outcome is not NotifyOutcome.OK:
                send(NotifyReport(result.outcome.event, result.sentence(), snapshot()))
