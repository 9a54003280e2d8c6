"""FAULT_POLICY's words: what a worker does with its VIP while etcd does not answer (a leaf module).

Read by the configuration (the agent's FAULT_POLICY), the API's validation (a VIP's own
`fault_policy`) and the worker that applies them (link/worker/main.py). link-client keeps a
copy of the names (it imports nothing of the agent); a unit test keeps the two equal.
"""
from __future__ import annotations

import enum


class FaultPolicy(str, enum.Enum):
    ARBITRATE = "arbitrate"  # the heartbeats between hosts decide (link.wire)
    ACTIVATE = "activate"  # LinK's rule: the fault is an event of the state machine (FAILING)
    KEEP = "keep"  # nothing changes until etcd answers again
    RELEASE = "release"  # the VIP is let go


DEFAULT = FaultPolicy.ARBITRATE
NAMES: tuple[str, ...] = tuple(policy.value for policy in FaultPolicy)  # the default first
