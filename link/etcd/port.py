"""The etcd interface the election logic needs, and what its errors mean.

The election is written against `EtcdPort` so unit tests can drive it with a fake etcd; the
real adapter (`link/etcd/grpc_client.py`) translates every gRPC failure into one of these
exceptions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol


class EtcdError(Exception):
    """etcd answered, but not with what was asked (refused, bad request)."""


class EtcdUnavailable(EtcdError):
    """etcd did not answer in time or could not be reached: counts toward KEEPALIVE_RETRY."""


class LeaseNotFound(EtcdError):
    """etcd answered that the lease does not exist (it expired): grant a new one."""


@dataclass(frozen=True)
class KeyInfo:
    """A key as read: its value (untrusted text, invalid UTF-8 escaped as \\xNN), the lease
    it is attached to (0: none, so no host keeps it alive) and its last modification."""

    value: str
    lease: int
    mod_revision: int


class EtcdPort(Protocol):
    def grant_lease(self, ttl: int) -> tuple[int, int]:
        """Grant a lease; return (lease id, granted TTL in seconds)."""

    def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; return its remaining TTL (raise LeaseNotFound if it is gone)."""

    def revoke_lease(self, lease_id: int) -> None: ...

    def get(self, key: str) -> KeyInfo | None: ...

    def get_prefix(self, prefix: str) -> dict[str, KeyInfo]: ...

    def put(self, key: str, value: str, lease: int) -> None: ...

    def create_if_absent(self, key: str, value: str, lease: int) -> bool:
        """Transaction: create the key only if it does not exist (create revision 0)."""

    def replace_if_unchanged(self, key: str, value: str, lease: int, mod_revision: int) -> bool:
        """Transaction: overwrite the key only if it was not modified since `mod_revision`."""

    def delete_if_lease(self, key: str, lease: int) -> bool:
        """Transaction: delete the key only if it is attached to `lease` (i.e. we hold it)."""

    def watch(self, key: str, on_change: Callable[[], None], prefix: bool = False) -> None:
        """Call `on_change` (from another thread) whenever the key (or a key under the prefix)
        changes, when the watch is (re)established, and when it breaks."""

    @property
    def watch_healthy(self) -> bool:
        """True while every watch is established, so no change goes unseen."""

    def call_stats(self) -> dict[str, Any]:
        """What the calls cost (requests, seconds and errors per method, leases), for the worker's metrics."""

    def close(self) -> None: ...
