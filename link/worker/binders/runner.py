"""Running a binder's actions off the worker's main loop: one thread, one pending slot.

The worker's keepalive never waits on a binder: its enter-actions only `submit()` the action
(activate, deactivate, ensure) and return. The thread runs one action at a time; a failed
attempt is retried with exponential backoff (BASE_DELAY doubling to MAX_DELAY, ±25 % jitter),
and the newest desired state wins: an action submitted while another is being retried
replaces it (a VIP deactivated while its activate is still failing runs deactivate next, the
activate is dropped). An attempt already running is left to finish (each is bounded by its
timeout), so a program is never killed halfway through a change.
"""
from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger(__name__)

BASE_DELAY = 0.5  # seconds before the first retry
MAX_DELAY = 30.0  # retries never wait longer than this
MAX_ERROR = 200  # characters of a program's output or an answer kept in an error
MAX_DOUBLINGS = 1000  # of BASE_DELAY in backoff_delay: far past any cap, within a float's range


class ActionFailed(Exception):
    """An attempt failed; the message is what `binder_status.error` shows."""


@dataclass(frozen=True)
class Action:
    name: str  # "activate", "deactivate" or "ensure"
    state: str  # the VIP's state it goes with: ACTIVATED, STANDBY or FAILING
    reason: str = ""
    context: dict[str, Any] = field(default_factory=dict)  # what the worker knew when it asked (priority...)


def backoff_delay(failures: int, base: float = BASE_DELAY, cap: float = MAX_DELAY,
                  rng: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds to wait after `failures` failed attempts in a row: base doubling up to cap, jittered."""
    # The doublings are bounded: a float cannot hold 2 ** 1024, and an action that keeps failing
    # (a web server down for a night) reaches that many attempts; the overflow killed the thread.
    doublings = min(max(0, failures - 1), MAX_DOUBLINGS)
    return min(cap, base * 2.0 ** doublings) * rng(0.75, 1.25)


def iso_now(clock: Callable[[], float] = time.time) -> str:
    return datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def idle_status() -> dict[str, Any]:
    """What `binder_status` says before the binder did anything."""
    return {"ok": True, "action": None, "error": None, "attempts": 0, "since": None}


class ActionRunner:
    """Runs `perform(action, attempt)` on a thread of its own; `perform` raises ActionFailed
    (or anything else) on failure. `on_change()` is called after every attempt (the worker's
    wake-up: it reports the new status)."""

    def __init__(self, perform: Callable[[Action, int], None], on_change: Callable[[], None] = lambda: None, *,
                 label: str = "", base: float = BASE_DELAY, cap: float = MAX_DELAY,
                 rng: Callable[[float, float], float] = random.uniform, wall: Callable[[], float] = time.time) -> None:
        self._perform = perform
        self._on_change = on_change
        self._label = label
        self._base, self._cap, self._rng, self._wall = base, cap, rng, wall
        self._cond = threading.Condition()
        self._pending: Action | None = None
        self._busy = False
        self._closing = False
        self._status = idle_status()
        self.history: list[tuple[str, int, bool]] = []  # (action, attempt, ok), for tests and debugging
        self._thread = threading.Thread(target=self._loop, name="binder", daemon=True)
        self._thread.start()

    # -- the worker's side ----------------------------------------------------------------
    def submit(self, action: Action) -> None:
        """Make `action` the next one; an action still waiting or being retried is dropped."""
        with self._cond:
            if self._pending is not None:
                logger.info("%sdropping pending %s: %s asked since", self._label, self._pending.name, action.name)
            self._pending = action
            self._cond.notify_all()

    def submit_if_idle(self, action: Action) -> bool:
        """Submit only when nothing is running, waiting or being retried (for periodic ensures)."""
        with self._cond:
            if self._busy or self._pending is not None or self._closing:
                return False
            self._pending = action
            self._cond.notify_all()
            return True

    def idle(self) -> bool:
        with self._cond:
            return not self._busy and self._pending is None

    def status(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._status)

    def close(self, wait: float) -> bool:
        """Stop after the action in hand and the pending one have had one attempt each (no
        more retries), waiting at most `wait` seconds; True if the thread is done."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, wait))
        return not self._thread.is_alive()

    # -- the thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._pending is None:
                    return  # closing, nothing left to do
                action, self._pending = self._pending, None
                self._busy = True
            try:
                self._run(action)
            finally:
                with self._cond:
                    self._busy = False

    def _run(self, action: Action) -> None:
        attempt = 0
        while True:
            attempt += 1
            error = self._attempt(action, attempt)
            if error is None:
                return
            if action.name == "ensure":
                with self._cond:
                    if self._pending is not None or self._closing:
                        return  # something newer was asked meanwhile: that wins
                # The VIP is not in place any more: put it back (activate, with its retries).
                logger.warning("%s%s; running activate again", self._label, error)
                action, attempt = Action("activate", action.state, f"ensure failed: {error}", action.context), 0
                continue
            delay = backoff_delay(attempt, self._base, self._cap, self._rng)
            with self._cond:
                if self._closing:
                    logger.warning("%s%s (attempt %d); stopping: not retried", self._label, error, attempt)
                    return
                logger.warning("%s%s (attempt %d); retrying in %.1fs", self._label, error, attempt, delay)
                self._cond.wait_for(lambda: self._pending is not None or self._closing, timeout=delay)
                if self._pending is not None:
                    logger.info("%s%s is dropped: %s asked since", self._label, action.name, self._pending.name)
                    return
                if self._closing:
                    return

    def _attempt(self, action: Action, attempt: int) -> str | None:
        start = time.monotonic()
        try:
            self._perform(action, attempt)
            error = None
        except ActionFailed as exc:
            error = str(exc)
        except Exception as exc:  # a bug or an unexpected OSError: a failed attempt, never a dead thread
            error = f"{action.name} failed: {type(exc).__name__}: {exc}"[: MAX_ERROR + 40]
        ok = error is None
        self.history.append((action.name, attempt, ok))
        with self._cond:
            old = self._status
            since = old["since"] if (old["ok"], old["action"]) == (ok, action.name) and old["since"] else iso_now(self._wall)
            self._status = {"ok": ok, "action": action.name, "error": error, "attempts": attempt, "since": since}
        if ok:
            logger.info("%s%s done (attempt %d, %.2fs)", self._label, action.name, attempt, time.monotonic() - start)
        try:
            self._on_change()
        except Exception:  # the wake-up pipe may be closed at the very end
            logger.debug("binder status change not signalled", exc_info=True)
        return error
