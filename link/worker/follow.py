"""A VIP that follows a leader key instead of an election (vip-manager's model, for Patroni).

Patroni writes its member name at `/<namespace>/<scope>/leader` on its own lease: the VIP
belongs where PostgreSQL's primary is, and Patroni alone decides that. A `Follower` is the
worker's election for such a VIP (`follow` set on POST /ips): each cycle it reads the key
(or, while the watch vouches for it, trusts the last read; the worker still reads every
TRUSTED_CYCLES + 1 cycles, in case a watch event was missed, as for any lock), and says

  - `elected`, the key's value is this host's `follow_value` (default HOSTNAME): bind;
  - `demoted`, it names another host, or the key is empty or deleted (no holder): unbind.

It takes no lock and never writes the key. It keeps a lease of its own, for what the worker
publishes as for any VIP (the candidate key and the state beside it: `GET /ips/<id>/candidates`,
the other agents' address checks and LinK v2 see which hosts serve the VIP); its refresh is
also the cycle's etcd call, so an outage is counted toward KEEPALIVE_RETRY by the election's
own rule (`Election._failed`, the one place an etcd error is judged), then FAULT_POLICY:

  - activate: bind (LinK's rule); keep: stay as it is; release: unbind;
  - arbitrate: as for an elected VIP (link.worker.wire_policy). A follower bound on the key's
    word while it reaches etcd says `lock` in its heartbeat (etcd's word is the key's here), so
    a holder cut from etcd yields to it: Patroni's failover while the old primary's host is cut
    moves the VIP with the key instead of leaving it on both hosts. With etcd down everywhere
    the holder keeps it (Patroni promotes nobody without etcd); a holder that dies meanwhile is
    replaced by the first-ranked standby on silence (clients reach a replica, read-only, rather
    than nothing), and the key decides again as soon as etcd answers.
"""
from __future__ import annotations

import logging
from typing import Callable

from link.config import Config
from link.etcd.port import EtcdPort, KeyInfo
from link.etcd.values import as_name
from link.vocabulary.vip import VipSpec
from link.vocabulary.vip_states import Event
from link.worker.candidates import Candidate
from link.worker.election import CycleResult, Election

logger = logging.getLogger(__name__)

_UNREAD = object()  # the key has not been read yet (or must be read again)


class Follower(Election):
    """The election's cycle (lease, publication, failures) with the lock replaced by a key it only reads."""

    def __init__(self, etcd: EtcdPort, vip: str, hostname: str, ttl: int, retry: int, *, key: str, value: str,
                 priority: int, clock: Callable[[], float]) -> None:
        super().__init__(etcd, vip, hostname, ttl, retry, priority=priority, preempt=False, clock=clock)
        self.key = key
        self.value = value or hostname
        self._key_seen: object = _UNREAD  # KeyInfo | None from the last read

    def _look_at_lock(self, eligible: bool, lock_unchanged: bool) -> CycleResult:
        """What the key says now (the name is the election's: run_cycle calls it after the lease)."""
        if lock_unchanged and self._key_seen is not _UNREAD:
            info = self._key_seen
        else:
            info = self._key_seen = self.etcd.get(self.key)
        assert info is None or isinstance(info, KeyInfo)
        if info is None or not info.value:
            return CycleResult(Event.DEMOTED, f"{self.key} is {'deleted' if info is None else 'empty'}: no leader", None)
        if info.value != self.value:
            holder = as_name(info.value)
            return CycleResult(Event.DEMOTED, f"{self.key} names {holder}", holder)
        if not eligible:
            return CycleResult(None, f"{self.key} names this host ({self.value}), which is not eligible now", None)
        return CycleResult(Event.ELECTED, f"{self.key} names this host ({self.value})", self.hostname)

    def watch(self, on_lock_change: Callable[[], None]) -> None:
        """Watch the key (the caller runs a cycle at once on a change, a break or a reconnection)."""
        def changed() -> None:
            self._key_seen = _UNREAD
            on_lock_change()

        self.etcd.watch(self.key, changed)

    def candidates(self, fresh: bool = False) -> list[Candidate]:
        # Not watched (no preemption to judge): read whenever asked (GET /ips/<id>/candidates).
        return super().candidates(fresh=True)

    def give_up_lock(self) -> str:
        return f"follows {self.key}: no lock of its own to release"


def make_election(etcd: EtcdPort, spec: VipSpec, config: Config, clock: Callable[[], float]) -> Election:
    """The VIP's election: a Follower of its leader key, or LinK's election on its lock."""
    priority = config.priority if spec.priority is None else spec.priority
    if spec.follow:
        return Follower(etcd, spec.ip, config.hostname, config.lease_ttl, config.keepalive_retry, key=spec.follow,
                        value=spec.follow_value, priority=priority, clock=clock)
    return Election(etcd, spec.ip, config.hostname, config.lease_ttl, config.keepalive_retry, priority=priority,
                    preempt=config.preempt if spec.preempt is None else spec.preempt,
                    preempt_delay=config.preempt_delay, grace=config.tick, clock=clock)
