"""The words of a VIP's state machine: its states and the events that move it (a leaf module).

The table that joins them lives with the worker that drives it (`link/worker/fsm.py`); the API's
metrics, the supervisor's status line and the docs read the names from here.
"""
from __future__ import annotations

import enum


class State(str, enum.Enum):
    BOOTING = "BOOTING"
    STANDBY = "STANDBY"
    ACTIVATED = "ACTIVATED"
    FAILING = "FAILING"


class Event(str, enum.Enum):
    FAULT = "fault"
    ELECTED = "elected"
    DEMOTED = "demoted"
    HEALTH_CHECK_FAIL = "health_check_fail"
    HEALTH_CHECK_SUCCESS = "health_check_success"
    # FAULT_POLICY=arbitrate: while etcd does not answer, the heartbeats between hosts decide (link.wire).
    WIRE_ELECTED = "wire_elected"
    WIRE_DEMOTED = "wire_demoted"
    # Track interfaces: a tracked interface lost its carrier; every one has it again (link.worker.carrier).
    CARRIER_LOST = "carrier_lost"
    CARRIER_BACK = "carrier_back"


# How a summary lists them (systemd's STATUS line): what serves first, then what waits.
SUMMARY_ORDER: tuple[State, ...] = (State.ACTIVATED, State.STANDBY, State.FAILING, State.BOOTING)
