"""A worker's reports to the supervisor (link.vocabulary.protocol)."""
from __future__ import annotations

from dataclasses import field
from typing import Any, Union

from link.vocabulary.message_base import Family, Message, message, WIRE


# -- worker -> supervisor: {"type": kind, ...} ----------------------------------------------
@message(Family.REPORT, "state")
class StateReport(Message):
    """on every transition and whenever the known holder or priority changes; an event when `from` differs from `state`"""

    state: str
    since: float  # unix time
    event: str | None = None
    holder: str | None = None
    reason: str = ""
    priority: int | None = None  # the VIP's effective priority
    previous: str | None = field(default=None, metadata={WIRE: "from"})  # None in the first report
    metrics: dict[str, Any] | None = None  # as in `metrics`
    binder_status: dict[str, Any] | None = None  # as in `binder`


@message(Family.REPORT, "binder")
class BinderReport(Message):
    """whenever the binder's status changes: `{"ok", "action", "error", "attempts", "since"}`"""

    binder_status: dict[str, Any] | None


@message(Family.REPORT, "metrics")
class MetricsReport(Message):
    """the worker's counters (plain numbers), every 5 s"""

    metrics: dict[str, Any]


@message(Family.REPORT, "boot_failed")
class BootFailed(Message):
    """before exiting when the VIP cannot be put in place on this host"""

    error: str


@message(Family.REPORT, "candidates_done")
class CandidatesDone(Message):
    """the answer to `candidates`: `[{"host", "priority", "state"}, ...]`, `error` "" when etcd answered"""

    request: int
    candidates: list[dict[str, Any]]
    error: str = ""


@message(Family.REPORT, "failover_done")
class FailoverDone(Message):
    """the answer to `failover`: 204, or the status and sentence the API answers"""

    request: int
    status: int
    error: str = ""


@message(Family.REPORT, "heartbeat")
class Heartbeat(Message):
    """alive: from the main loop's tick when nothing else went up for a lease; a worker silent for 3 leases (5 s at least) is replaced"""


@message(Family.REPORT, "claim")
class ClaimReport(Message):
    """another MAC claims the VIP (`event` `foreign_claim`) or no longer does (`foreign_claim_over`): `claim` `{"mac", "host", "since", "kind"}` (`since` unix time) or None; an event on the VIP"""

    claim: dict[str, Any] | None
    event: str
    reason: str
    metrics: dict[str, Any] | None = None  # as in `metrics`


@message(Family.REPORT, "notify")
class NotifyReport(Message):
    """a notify program failed, timed out, was refused or dropped (`event` `notify_failed`...: link.vocabulary.notify_words); an event on the VIP"""

    event: str
    reason: str
    metrics: dict[str, Any] | None = None  # as in `metrics`


@message(Family.REPORT, "wire")
class WireReport(Message):
    """what this host's heartbeat says of the VIP, and the wire's decision (`decision` None while etcd decides); on change"""

    bound: bool
    lock: bool
    eligible: bool
    priority: int
    decision: str | None = None
    rank: int | None = None
    since: float | None = None  # unix time of the decision
    reason: str = ""


Report = Union[StateReport, BinderReport, MetricsReport, BootFailed, CandidatesDone, FailoverDone, Heartbeat, ClaimReport,
               NotifyReport, WireReport]
