"""LinK v2's per-VIP state machine, as a table (its states and events: `link/vocabulary/vip_states.py`).

The table is the single source of truth: the worker drives it, the tests check every cell and
the README's diagram is generated from it (`python -m link.worker.fsm`).
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Mapping

from link import state_diagram
from link.vocabulary.vip_states import Event, State

logger = logging.getLogger(__name__)


S, E = State, Event
TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (S.BOOTING, E.ELECTED): S.ACTIVATED,
    (S.BOOTING, E.DEMOTED): S.STANDBY,
    (S.BOOTING, E.FAULT): S.ACTIVATED,
    (S.BOOTING, E.HEALTH_CHECK_FAIL): S.FAILING,
    (S.BOOTING, E.HEALTH_CHECK_SUCCESS): S.BOOTING,
    (S.STANDBY, E.ELECTED): S.ACTIVATED,
    (S.STANDBY, E.DEMOTED): S.STANDBY,
    (S.STANDBY, E.FAULT): S.ACTIVATED,
    (S.STANDBY, E.HEALTH_CHECK_FAIL): S.FAILING,
    (S.STANDBY, E.HEALTH_CHECK_SUCCESS): S.STANDBY,
    (S.ACTIVATED, E.ELECTED): S.ACTIVATED,
    (S.ACTIVATED, E.DEMOTED): S.STANDBY,
    (S.ACTIVATED, E.FAULT): S.ACTIVATED,
    (S.ACTIVATED, E.HEALTH_CHECK_FAIL): S.FAILING,
    (S.ACTIVATED, E.HEALTH_CHECK_SUCCESS): S.ACTIVATED,
    (S.FAILING, E.ELECTED): S.FAILING,
    (S.FAILING, E.DEMOTED): S.FAILING,
    (S.FAILING, E.FAULT): S.FAILING,
    (S.FAILING, E.HEALTH_CHECK_FAIL): S.FAILING,
    (S.FAILING, E.HEALTH_CHECK_SUCCESS): S.STANDBY,
    # Decided on the wire while etcd does not answer (link.worker.wire_policy).
    (S.BOOTING, E.WIRE_ELECTED): S.ACTIVATED,
    (S.STANDBY, E.WIRE_ELECTED): S.ACTIVATED,
    (S.ACTIVATED, E.WIRE_ELECTED): S.ACTIVATED,
    (S.FAILING, E.WIRE_ELECTED): S.FAILING,
    (S.BOOTING, E.WIRE_DEMOTED): S.STANDBY,
    (S.STANDBY, E.WIRE_DEMOTED): S.STANDBY,
    (S.ACTIVATED, E.WIRE_DEMOTED): S.STANDBY,
    (S.FAILING, E.WIRE_DEMOTED): S.FAILING,
    # A tracked interface without carrier (link.worker.carrier): this host cannot serve the VIP.
    # Back to STANDBY only when nothing else keeps it FAILING (link.worker.main.Worker.recover).
    (S.BOOTING, E.CARRIER_LOST): S.FAILING,
    (S.STANDBY, E.CARRIER_LOST): S.FAILING,
    (S.ACTIVATED, E.CARRIER_LOST): S.FAILING,
    (S.FAILING, E.CARRIER_LOST): S.FAILING,
    (S.BOOTING, E.CARRIER_BACK): S.BOOTING,
    (S.STANDBY, E.CARRIER_BACK): S.STANDBY,
    (S.ACTIVATED, E.CARRIER_BACK): S.ACTIVATED,
    (S.FAILING, E.CARRIER_BACK): S.STANDBY,
}

EnterAction = Callable[[State, Event, str], None]


class StateMachine:
    """Holds the current state; `handle` is the one place a state changes.

    A transition to the state already held changes nothing and runs no enter-action: the
    election reports `elected` every cycle while it holds the lock, and re-binding the VIP
    each time would be wrong.
    """

    def __init__(self, on_enter: Mapping[State, EnterAction] | None = None, label: str = "",
                 on_change: Callable[[State, State, str], None] | None = None) -> None:
        self.state = State.BOOTING
        self.since = time.time()
        self._on_enter = dict(on_enter or {})
        self._label = label
        self._on_change = on_change  # (old, new, reason) after every change: the notify programs' queue

    def handle(self, event: Event, reason: str = "") -> bool:
        """Apply an event; return True when the state changed."""
        new = TRANSITIONS[(self.state, event)]
        if new is self.state:
            return False
        old, self.state, self.since = self.state, new, time.time()
        logger.info("%s%s -> %s on %s: %s", self._label, old.value, new.value, event.value, reason)
        action = self._on_enter.get(new)
        if action is not None:
            action(old, event, reason)
        if self._on_change is not None:
            self._on_change(old, new, reason)
        return True


def mermaid() -> str:
    return state_diagram.mermaid(State.BOOTING, TRANSITIONS)


def markdown_table() -> str:
    head = "| event \\ from | " + " | ".join(s.value for s in State) + " |"
    rule = "|---" * (len(State) + 1) + "|"
    rows = [f"| {e.value} | " + " | ".join(TRANSITIONS[(s, e)].value for s in State) + " |" for e in Event]
    return "\n".join([head, rule, *rows])


if __name__ == "__main__":
    print("```mermaid\n" + mermaid() + "\n```\n\n" + markdown_table())
