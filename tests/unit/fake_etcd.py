"""An in-memory etcd behind the EtcdPort seam: leases, revisions, transactions, outages.

Outages fail calls as link.etcd.grpc_errors.translate does: `down` with a deadline error, or
any EtcdError given to `fail` (DEADLINE, REFUSED, NO_LEADER: EtcdUnavailable, counted toward
KEEPALIVE_RETRY; DENIED: a plain EtcdError, etcd answered no), for every host or for one
client (a partition). As with the real adapter, a host that cannot reach etcd has no healthy
watch: its callbacks hear the break and the reconnection, and no change in between.
"""
from __future__ import annotations

from typing import Any, Callable

from link.etcd.port import EtcdError, EtcdUnavailable, KeyInfo, LeaseNotFound

# What the real adapter raises (link.etcd.grpc_errors.translate of the gRPC status etcd's client sees).
DEADLINE = EtcdUnavailable("DEADLINE_EXCEEDED: context deadline exceeded")
REFUSED = EtcdUnavailable("UNAVAILABLE: failed to connect to all addresses; connection refused")
NO_LEADER = EtcdUnavailable("UNAVAILABLE: etcdserver: no leader")
DENIED = EtcdError("PERMISSION_DENIED: etcdserver: permission denied")


class FakeEtcd:
    """One store that several fake clients (hosts) share; `down` (or `fail`) makes every call fail."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyInfo] = {}
        self.leases: dict[int, int] = {}
        self.revision = 0
        self.next_lease = 0x100
        self.down = False
        self.error: EtcdError | None = None  # set by fail(): what every call raises
        self.watchers: list[tuple[FakeEtcdClient, str, Callable[[], None], bool]] = []

    def fail(self, error: EtcdError = DEADLINE) -> None:
        """etcd stops answering every host (with `error`): their watches break."""
        self.error = error
        self._notify_all()

    def recover(self) -> None:
        """etcd answers again: the watches are established again (and say so)."""
        self.error, self.down = None, False
        self._notify_all()

    def _notify_all(self) -> None:
        for _, _, callback, _ in list(self.watchers):
            callback()  # a break or a reconnection is told even to a broken watch's callback

    def client(self) -> "FakeEtcdClient":
        return FakeEtcdClient(self)

    def put_raw(self, key: str, value: str, lease: int = 0) -> None:
        """What anyone with write access to etcd can do (etcdctl put): by default, no lease."""
        self._put(key, value, lease)

    def expire(self, lease: int) -> None:
        """What etcd does when a lease is not refreshed in time."""
        self.leases.pop(lease, None)
        for key in [k for k, v in self.keys.items() if v.lease == lease]:
            self._delete(key)

    def _put(self, key: str, value: str, lease: int) -> None:
        if lease and lease not in self.leases:
            raise LeaseNotFound("etcdserver: requested lease not found")
        self.revision += 1
        self.keys[key] = KeyInfo(value, lease, self.revision)
        self._notify(key)

    def _delete(self, key: str) -> None:
        if self.keys.pop(key, None) is not None:
            self.revision += 1
            self._notify(key)

    def _notify(self, key: str) -> None:
        for client, watched, callback, prefix in list(self.watchers):
            if (watched == key or (prefix and key.startswith(watched))) and client.watch_healthy:
                callback()  # a broken watch sees nothing: the change is missed


class FakeEtcdClient:
    def __init__(self, store: FakeEtcd) -> None:
        self.store = store
        self.calls: list[str] = []
        self.error: EtcdError | None = None  # this host alone is cut off (fail/recover)
        self.watch_broken = False  # etcd answers, but this host's watch stream is down

    def _check(self, name: str) -> None:
        self.calls.append(name)
        error = self.error or self.store.error
        if error is not None:
            raise type(error)(*error.args)  # a new exception each call, as gRPC raises
        if self.store.down:
            raise EtcdUnavailable("DEADLINE_EXCEEDED: fake etcd is down")

    def fail(self, error: EtcdError = DEADLINE) -> None:
        """This host cannot reach etcd (a partition); the others still do."""
        self.error = error
        self._notify_mine()

    def recover(self) -> None:
        self.error = None
        self._notify_mine()

    def break_watch(self, broken: bool = True) -> None:
        """The watch stream breaks (or comes back) while calls still work; told to the callbacks."""
        self.watch_broken = broken
        self._notify_mine()

    def _notify_mine(self) -> None:
        for client, _, callback, _ in list(self.store.watchers):
            if client is self:
                callback()

    @staticmethod
    def _leased(key: str, lease: int) -> None:
        # Every key link writes lives on a lease (a key without one outlives its host): the
        # fake fails every test in which link would write one.
        assert lease, f"link wrote {key} without a lease"

    def grant_lease(self, ttl: int) -> tuple[int, int]:
        self._check("grant_lease")
        self.store.next_lease += 1
        self.store.leases[self.store.next_lease] = ttl
        return self.store.next_lease, ttl

    def keepalive(self, lease_id: int) -> int:
        self._check("keepalive")
        if lease_id not in self.store.leases:
            raise LeaseNotFound(f"lease {lease_id:x} expired")
        return self.store.leases[lease_id]

    def revoke_lease(self, lease_id: int) -> None:
        self._check("revoke_lease")
        if lease_id not in self.store.leases:
            return
        self.store.expire(lease_id)

    def get(self, key: str) -> KeyInfo | None:
        self._check("get")
        return self.store.keys.get(key)

    def get_prefix(self, prefix: str) -> dict[str, KeyInfo]:
        self._check("get_prefix")
        return {k: v for k, v in self.store.keys.items() if k.startswith(prefix)}

    def put(self, key: str, value: str, lease: int) -> None:
        self._check("put")
        self._leased(key, lease)
        self.store._put(key, value, lease)

    def create_if_absent(self, key: str, value: str, lease: int) -> bool:
        self._check("create_if_absent")
        self._leased(key, lease)
        if key in self.store.keys:
            return False
        self.store._put(key, value, lease)
        return True

    def replace_if_unchanged(self, key: str, value: str, lease: int, mod_revision: int) -> bool:
        self._check("replace_if_unchanged")
        self._leased(key, lease)
        current = self.store.keys.get(key)
        if current is None or current.mod_revision != mod_revision:
            return False
        self.store._put(key, value, lease)
        return True

    def delete_if_lease(self, key: str, lease: int) -> bool:
        self._check("delete_if_lease")
        current = self.store.keys.get(key)
        if current is None or current.lease != lease:
            return False
        self.store._delete(key)
        return True

    def watch(self, key: str, on_change: Callable[[], None], prefix: bool = False) -> None:
        self.store.watchers.append((self, key, on_change, prefix))

    @property
    def watch_healthy(self) -> bool:
        return not (self.store.down or self.store.error or self.error or self.watch_broken)

    def call_stats(self) -> dict[str, Any]:
        return {"requests": {name: self.calls.count(name) for name in set(self.calls)}}

    def close(self) -> None:
        self.store.watchers = [w for w in self.store.watchers if w[0] is not self]  # its watches end with it
