"""One VIP's election, one synchronous cycle per tick (in the manner of Patroni's run_cycle).

`run_cycle` keeps the lease alive, looks at the lock and returns the event it implies plus a
sentence that says why; the worker logs the sentence and feeds the event to the state machine.
Every etcd call has a deadline (in the adapter); `_failed` alone decides what a failure means.

What is read from etcd is not trusted (anyone who can write to etcd can put any key): only a
key on a lease stands for a live host, since every key link writes is on its worker's lease.
A lock without a lease holds nothing: an eligible host takes it over with a transaction that
compares the key's revision (so a legitimate change made meanwhile wins), and counts it
(`leaseless_takeovers`, the metric link_vip_leaseless_lock_takeovers_total). A candidate
without a lease, or malformed (link.worker.candidates), is ignored. Each bad key is logged
once, escaped (link.etcd.values); a host name read from etcd is shown escaped too.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from link.vocabulary.vip import candidate_key, candidates_prefix, lock_key
from link.worker.candidates import (DEFAULT_PRIORITY, BadCandidate, Candidate, better_than, candidate_info_key, decode,
                                    encode)
from link.worker.candidates import candidates_prefix as info_prefix
from link.etcd.port import EtcdError, EtcdPort, EtcdUnavailable, KeyInfo, LeaseNotFound
from link.etcd.values import OncePerKey, as_name, plain_name, shown
from link.vocabulary.vip_states import Event, State

logger = logging.getLogger(__name__)

_UNKNOWN = object()  # the lock's last seen value is not known: read it


@dataclass(frozen=True)
class CycleResult:
    event: Event | None
    sentence: str
    holder: str | None = None
    hand_over: bool = False  # a better candidate waited PREEMPT_DELAY: unbind, then free the lock


class Election:
    def __init__(self, etcd: EtcdPort, vip: str, hostname: str, ttl: int, retry: int, *,
                 priority: int = DEFAULT_PRIORITY, preempt: bool = True, preempt_delay: float = 3.0,
                 grace: float = 0.5, clock: Callable[[], float] = time.monotonic) -> None:
        self.etcd = etcd
        self.vip = vip
        self.hostname = hostname
        self.ttl = ttl
        self.retry = retry
        self.priority = priority
        self.preempt = preempt
        self.preempt_delay = preempt_delay
        self.grace = grace  # how long a free lock is left to a better candidate
        self.clock = clock
        self.lock = lock_key(vip)
        self.candidate = candidate_key(vip, hostname)
        self.info_key = candidate_info_key(vip, hostname)
        self.lease_id: int | None = None
        self.failures = 0
        self._published: tuple[int, str] | None = None
        self._free_since: float | None = None
        self._better_since: float | None = None
        self._lock_seen: object = _UNKNOWN  # KeyInfo | None from the last read
        self._candidates: list[Candidate] | None = None
        self.bad_keys = OncePerKey(vip)  # what was wrong with which key, said once
        self.leaseless_takeovers = 0  # locks without a lease this worker took over

    def run_cycle(self, eligible: bool = True, state: str = State.STANDBY.value, lock_unchanged: bool = False) -> CycleResult:
        """Refresh the lease, then decide: elected, demoted, fault, or nothing yet.

        `eligible` is False while the VIP is FAILING (or just handed over): the host keeps its
        lease (its peers see it compete again the moment it recovers) but does not take the
        lock. `state` is published with the priority so peers can judge candidates.
        `lock_unchanged` says the watch on the lock is healthy and saw nothing since the last
        read: the lock held then is still held, and only the lease needs refreshing (this
        keeps an idle VIP at one etcd call per tick).
        """
        try:
            lease_note = self._keep_lease()
            self.publish(state)
            result = self._look_at_lock(eligible, lock_unchanged)
        except EtcdError as exc:
            return self._failed(exc)
        self.failures = 0
        if lease_note:
            return CycleResult(result.event, f"{lease_note}; {result.sentence}", result.holder)
        return result

    def _keep_lease(self) -> str:
        if self.lease_id is not None:
            try:
                self.etcd.keepalive(self.lease_id)
                return ""
            except LeaseNotFound:
                old, self.lease_id = self.lease_id, None
                note = f"lease {old:x} had expired"
        else:
            note = ""
        self.lease_id, granted = self.etcd.grant_lease(self.ttl)
        self._published = None
        self._lock_seen = _UNKNOWN
        # The candidate key lives on our lease: peers (and LinK v2 agents) see who competes.
        self.etcd.put(self.candidate, self.hostname, self.lease_id)
        granted_note = f"granted lease {self.lease_id:x} ({granted}s)"
        return f"{note}, {granted_note}" if note else granted_note

    def _look_at_lock(self, eligible: bool, lock_unchanged: bool) -> CycleResult:
        assert self.lease_id is not None
        if lock_unchanged and isinstance(self._lock_seen, KeyInfo):
            info: KeyInfo | None = self._lock_seen
        else:
            # After any write of ours below, _lock_seen is unknown again: the next cycle reads.
            info = self._lock_seen = self.etcd.get(self.lock)
        if info is None or not info.lease:
            taken = self._take_free_lock(info, eligible)
            if taken is not None:
                return taken
            info = self.etcd.get(self.lock)
            if info is None or not info.lease:
                # Taken and gone again between our two calls: look again next cycle.
                return CycleResult(None, "the lock changed hands twice during the cycle", None)
        else:
            self.bad_keys.fine(self.lock)
        self._free_since = None
        if info.lease == self.lease_id:
            if not eligible:
                # Still ours although we stepped down (a failed release, or FAILING): free it.
                self._lock_seen = _UNKNOWN
                deleted = self.etcd.delete_if_lease(self.lock, self.lease_id)
                return CycleResult(None, "released the lock this host may not hold" if deleted else "the lock changed hands", None)
            return self._consider_preemption()
        self._better_since = None
        if info.value == self.hostname and eligible:
            # Our hostname on another lease: a previous worker of this very host (killed, or
            # the agent restarted), or LinK v2 stopped on this host, still holds it until its
            # lease expires. Take it over in place; no other host competes for this key under
            # our name. The old lease is left to expire, never revoked: LinK v2 keeps one lease
            # per host, and revoking it would delete the locks of this host's other VIPs
            # before their workers take them over (free locks: a failover window).
            self._lock_seen = _UNKNOWN
            if self.etcd.replace_if_unchanged(self.lock, self.hostname, self.lease_id, info.mod_revision):
                return CycleResult(Event.ELECTED, f"took over the lock left by a previous worker of this host (lease {info.lease:x})", self.hostname)
            return CycleResult(None, "the lock changed while taking it over", None)
        holder = as_name(info.value)
        return CycleResult(Event.DEMOTED, f"{holder} holds the lock", holder)

    def _take_free_lock(self, info: KeyInfo | None, eligible: bool) -> CycleResult | None:
        """The lock is free (`info` None), or held by nobody: a key without a lease, which no
        host keeps alive and which would never expire. Take it, unless a better candidate
        should (for `grace`); None if another host was quicker (the caller reads who)."""
        assert self.lease_id is not None
        if info is None:
            self.bad_keys.fine(self.lock)
            what = "free"
        else:
            what = "not on a lease"
            self.bad_keys.warn(self.lock, info.value, "the lock is not on a lease, so no host holds it "
                               "(every agent's lock is on its lease): an eligible host takes it over")
        if not eligible:
            return CycleResult(None, f"the lock is {what} but this host is not eligible", None)
        now = self.clock()
        if self._free_since is None:
            self._free_since = now
        better = better_than(self.candidates(), self.hostname, self.priority)
        if better and now - self._free_since < self.grace:
            best = better[0]
            return CycleResult(None, f"the lock is {what}; leaving it to {best.host} (priority {best.priority} < {self.priority})", None)
        self._free_since = None
        self._lock_seen = _UNKNOWN
        if info is None:
            if self.etcd.create_if_absent(self.lock, self.hostname, self.lease_id):
                return CycleResult(Event.ELECTED, "took the free lock", self.hostname)
            return None
        # Compared on its revision: a host that took the lock meanwhile, or a new value, wins.
        if self.etcd.replace_if_unchanged(self.lock, self.hostname, self.lease_id, info.mod_revision):
            self.leaseless_takeovers += 1
            return CycleResult(Event.ELECTED, f"took over the lock, which was not on a lease (value {shown(info.value)})", self.hostname)
        return None

    def _consider_preemption(self) -> CycleResult:
        """The holder steps aside for a healthy better-priority candidate that has been there
        for PREEMPT_DELAY (so a flapping host does not bounce the VIP); equal priorities keep
        the current holder."""
        if not self.preempt:
            return CycleResult(Event.ELECTED, "holds the lock", self.hostname)
        better = better_than(self.candidates(), self.hostname, self.priority)
        if not better:
            self._better_since = None
            return CycleResult(Event.ELECTED, "holds the lock", self.hostname)
        now = self.clock()
        if self._better_since is None:
            self._better_since = now
        best = better[0]
        waited = now - self._better_since
        if waited < self.preempt_delay:
            return CycleResult(Event.ELECTED, f"holds the lock; {best.host} has a better priority ({best.priority} < {self.priority}) for {waited:.1f}s", self.hostname)
        self._better_since = None
        return CycleResult(Event.DEMOTED, f"{best.host} has a better priority ({best.priority} < {self.priority}) for {waited:.1f}s: handing over", None, hand_over=True)

    def candidates(self, fresh: bool = False) -> list[Candidate]:
        """The published candidates that count (on a lease, well formed: the module docstring);
        cached until `candidates_changed` (the prefix's watch)."""
        if fresh or self._candidates is None:
            prefix = info_prefix(self.vip)
            keys = self.etcd.get_prefix(prefix)
            found = []
            for key, info in keys.items():
                try:
                    if not info.lease:
                        raise BadCandidate("not on a lease, ignored (every agent writes its candidate key on its lease)")
                    found.append(decode(key[len(prefix):], info.value))
                except BadCandidate as exc:
                    self.bad_keys.warn(key, info.value, f"not a candidate: {exc}")
                else:
                    self.bad_keys.fine(key)
            self.bad_keys.keep_only(set(keys), prefix)
            self._candidates = found
        return self._candidates

    def candidates_changed(self) -> None:
        """Called from the watch thread: the next look reads them again."""
        self._candidates = None

    def watch(self, on_lock_change: Callable[[], None]) -> None:
        """Watch what the election reads: the lock (the caller runs a cycle at once) and the
        candidates (their cache is dropped)."""
        self.etcd.watch(self.lock, on_lock_change)
        self.etcd.watch(info_prefix(self.vip), self.candidates_changed, prefix=True)

    def publish(self, state: str) -> None:
        """Tell peers our priority and state (on our lease); only when they changed."""
        if self.lease_id is None or self._published == (self.priority, state):
            return
        self.etcd.put(self.info_key, encode(self.priority, state), self.lease_id)
        self._published = (self.priority, state)

    def _failed(self, exc: EtcdError) -> CycleResult:
        """What an etcd failure means for this VIP: the only place that decides it."""
        if isinstance(exc, LeaseNotFound):
            # etcd answered: it is reachable. The lease expired between two calls.
            self.lease_id = None
            return CycleResult(None, f"lease lost ({exc}); a new one is granted next cycle")
        self.failures += 1
        kind = "unreachable" if isinstance(exc, EtcdUnavailable) else "refused the request"
        if self.failures >= self.retry:
            return CycleResult(Event.FAULT, f"etcd {kind} {self.failures} times in a row: {exc}")
        return CycleResult(None, f"etcd {kind} ({self.failures}/{self.retry}): {exc}")

    def competitors(self) -> list[str]:
        """Other hosts whose candidate key is alive (on a lease that has not expired); a key
        without a lease, or whose value is no host name, is nobody."""
        prefix = candidates_prefix(self.vip)
        keys = self.etcd.get_prefix(prefix)
        hosts = []
        for key, info in keys.items():
            if key == self.candidate:
                continue
            if not info.lease:
                self.bad_keys.warn(key, info.value, "not a competitor: not on a lease")
            elif not plain_name(info.value):
                self.bad_keys.warn(key, info.value, "not a competitor: the value is no host name")
            else:
                hosts.append(info.value)
        self.bad_keys.keep_only(set(keys), prefix)
        return sorted(hosts)

    def counters(self) -> dict[str, int]:
        """What the election counts, for the worker's metrics."""
        return {"leaseless_lock_takeovers": self.leaseless_takeovers}

    def give_up_lock(self) -> str:
        """Delete the lock if we hold it, keeping the lease (FAILING: stay a visible candidate)."""
        if self.lease_id is None:
            return "no lease, nothing to release"
        self._lock_seen = _UNKNOWN
        try:
            deleted = self.etcd.delete_if_lease(self.lock, self.lease_id)
        except EtcdError as exc:
            return f"could not release the lock: {exc}"
        return "released the lock" if deleted else "did not hold the lock"

    def resign(self) -> str:
        """Leave the election: revoking the lease deletes the lock (only if it is ours) and
        the candidate key in one step, so a standby's watch fires at once."""
        if self.lease_id is None:
            return "no lease to revoke"
        lease, self.lease_id = self.lease_id, None
        try:
            self.etcd.revoke_lease(lease)
        except EtcdError as exc:
            return f"could not revoke lease {lease:x} ({exc}); it expires within {self.ttl}s"
        return f"revoked lease {lease:x}"
