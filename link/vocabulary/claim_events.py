"""The events a worker's claim guard adds to a VIP (link.worker.claim_guard), spelled once:
the `event` of a `claim` report, shown by `link-client events` and the API's events.

A leaf module: the standard library only.
"""
from __future__ import annotations

import enum


class ClaimNote(str, enum.Enum):
    FOREIGN_CLAIM = "foreign_claim"  # another MAC says it has the VIP
    FOREIGN_CLAIM_OVER = "foreign_claim_over"  # no claim is seen any more (or the VIP is no longer watched here)
