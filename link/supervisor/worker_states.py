"""The supervisor's view of a worker process, as a table (after Supervisor's states.py).

A leaf module: the states (`worker.state` in the API, `worker_state` in the metrics), what
happens to a worker process, and the state each happening leads to. The one setter that
applies them is `link.supervisor.lifecycle.change`; docs/ARCHITECTURE.md's diagram is
generated from the table (`python -m link.supervisor.worker_states`) and a unit test keeps
the two equal.
"""
from __future__ import annotations

import enum
from typing import Mapping

from link import state_diagram


class WorkerState(str, enum.Enum):
    STOPPED = "STOPPED"  # no process and none due: not started yet, or exited after being told to stop
    QUEUED = "QUEUED"  # due to start, waiting for the boot gate (link.supervisor.boot_gate), in order of arrival
    RUNNING = "RUNNING"  # a worker process serves the VIP
    HUNG = "HUNG"  # silent too long (no heartbeat): sent SIGTERM, SIGKILL at its kill_at
    BACKOFF = "BACKOFF"  # it exited on its own or was killed: respawned at respawn_at (jittered backoff)
    FATAL = "FATAL"  # it failed to boot MAX_BOOT_FAILURES times in a row: tried again at respawn_at,
    #                  FATAL_RETRY (minutes) later, and FATAL again at once if that boot fails too
    STOPPING = "STOPPING"  # told to stop (DELETE, the agent stopping): not respawned


class WorkerEvent(str, enum.Enum):
    QUEUE = "queue"  # a start is due (added, agent start, respawn): it waits its turn at the boot gate
    SPAWNED = "spawned"  # a process was forked for the VIP
    SILENT = "silent"  # no message from it for the hung timeout
    EXITED = "exited"  # it exited (or was killed) and is respawned after a backoff
    GAVE_UP = "gave_up"  # it exited failing to boot once too often: FATAL
    STOP = "stop"  # told to stop: DELETE, or the agent stopping


W, V = WorkerState, WorkerEvent
# Pairs not listed cannot happen (a process that is not there cannot exit or be silent);
# the setter refuses them with an error line rather than guessing.
TRANSITIONS: Mapping[tuple[WorkerState, WorkerEvent], WorkerState] = {
    (W.STOPPED, V.QUEUE): W.QUEUED,
    (W.STOPPED, V.STOP): W.STOPPED,
    (W.QUEUED, V.SPAWNED): W.RUNNING,
    (W.QUEUED, V.STOP): W.STOPPED,  # deleted, or the agent stopping, before its turn: never forked
    (W.RUNNING, V.SILENT): W.HUNG,
    (W.RUNNING, V.EXITED): W.BACKOFF,
    (W.RUNNING, V.GAVE_UP): W.FATAL,
    (W.RUNNING, V.STOP): W.STOPPING,
    (W.HUNG, V.EXITED): W.BACKOFF,
    (W.HUNG, V.GAVE_UP): W.FATAL,
    (W.HUNG, V.STOP): W.STOPPING,
    (W.BACKOFF, V.QUEUE): W.QUEUED,
    (W.BACKOFF, V.STOP): W.STOPPED,
    (W.FATAL, V.QUEUE): W.QUEUED,
    (W.FATAL, V.STOP): W.STOPPED,
    (W.STOPPING, V.STOP): W.STOPPING,
    (W.STOPPING, V.EXITED): W.STOPPED,
}


def mermaid() -> str:
    return state_diagram.mermaid(W.STOPPED, TRANSITIONS)


if __name__ == "__main__":
    print("```mermaid\n" + mermaid() + "\n```")
