"""The numbers of the etcd calls a worker made (link.etcd.grpc_client.GrpcEtcd counts them),
an error counted by its kind."""
from __future__ import annotations

from typing import Any

from link.etcd.port import EtcdError, EtcdUnavailable, LeaseNotFound


def error_kind(error: EtcdError) -> str:
    if isinstance(error, LeaseNotFound):
        return "lease_not_found"
    return "unavailable" if isinstance(error, EtcdUnavailable) else "refused"


class CallStats:
    """How many etcd calls of each method, their total seconds and their errors, for the
    metrics. Plain counters bumped by the worker's main thread (the watch is not counted);
    the worker copies them into its reports to the supervisor."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, dict[str, int]] = {}
        self.lease_grants = 0
        self.lease_renewals = 0

    def record(self, method: str, seconds: float, error: EtcdError | None = None) -> None:
        self.requests[method] = self.requests.get(method, 0) + 1
        self.seconds[method] = self.seconds.get(method, 0.0) + seconds
        if error is not None:
            by_kind = self.errors.setdefault(method, {})
            kind = error_kind(error)
            by_kind[kind] = by_kind.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {"requests": dict(self.requests), "seconds": dict(self.seconds),
                "errors": {m: dict(k) for m, k in self.errors.items()},
                "lease_grants": self.lease_grants, "lease_renewals": self.lease_renewals}
