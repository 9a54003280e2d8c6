"""A state machine's table, (state, event) -> state, drawn as a Mermaid state diagram.

A leaf module shared by the VIP's state machine (link.worker.fsm) and the supervisor's view of
a worker process (link.supervisor.worker_states): the docs show diagrams generated from the
tables, and unit tests keep them equal.
"""
from __future__ import annotations

import enum
from typing import Mapping, TypeVar

# Each table has its own State and Event enums (a Mapping's key type is invariant).
StateT = TypeVar("StateT", bound=enum.Enum)
EventT = TypeVar("EventT", bound=enum.Enum)


def mermaid(initial: StateT, transitions: Mapping[tuple[StateT, EventT], StateT]) -> str:
    """The table as a Mermaid state diagram (self-loops left out: they change nothing)."""
    lines = ["stateDiagram-v2", f"    [*] --> {initial.value}"]
    for (src, event), dst in transitions.items():
        if src is not dst:
            lines.append(f"    {src.value} --> {dst.value}: {event.value}")
    return "\n".join(lines)
