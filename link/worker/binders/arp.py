"""The `arp` binder (the default, LinK's behaviour): netlink, then gratuitous ARP or NA.

The VIP is bound with a lifetime of one lease and refreshed every tick while this host holds
it: if the whole agent is SIGKILLed or frozen, the kernel removes the address about when the
peers take the VIP over (link.adapters.rtnl). Its deletion by anyone else is seen at the next cycle,
through a netlink socket that the kernel filters down to deletions on our interface.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from link.adapters.netlink import AddressBinder
from link.adapters.rtnl import DeletionWatch
from link.adapters.announce import Announcer
from link.config import Config
from link.vocabulary.binder_kinds import ARP
from link.vocabulary.vip import VipSpec
from link.worker.binders.runner import idle_status, iso_now

logger = logging.getLogger(__name__)


class ArpBinder:
    kind = ARP.name
    announces = True  # the VIP is on INTERFACE: the claim guard watches it

    def __init__(self, ifname: str, vip: str, count: int, interval: float, lifetime: int | None = None,
                 refresh_every: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ifname = ifname
        self.vip = vip
        self.lifetime = lifetime
        self.refresh_every = refresh_every
        self.clock = clock
        self.address = AddressBinder(ifname, vip, lifetime)
        try:
            self.watch = DeletionWatch(self.address.index, vip)
            try:
                self.announcer = Announcer(ifname, vip, self.address.mac(), count, interval)
            except BaseException:
                self.watch.close()
                raise
        except BaseException:
            self.address.close()
            raise
        self.active = False
        self._refreshed_at = 0.0
        self._longest_gap = 0.0  # between two refreshes, since the last look at the watch
        self._status = idle_status()

    @classmethod
    def from_spec(cls, config: Config, spec: VipSpec, wake: Callable[[], None], priority: Callable[[], int]) -> "ArpBinder":
        # The address lives one lease unless refreshed, and is refreshed every tick: the same
        # margin as the lease itself (a refresh may fail twice before it expires).
        return cls(config.interface, spec.ip, config.arp_gratuitous_count, config.arp_gratuitous_interval,
                   lifetime=config.lease_ttl, refresh_every=config.tick)

    def _done(self, action: str) -> None:
        if self._status["action"] != action:
            self._status = {"ok": True, "action": action, "error": None, "attempts": 1, "since": iso_now()}

    def activate(self, reason: str = "") -> None:
        """Bind (if not bound yet) and start a round of announcements, the first at once."""
        if not self.active:
            self.watch.look()  # deletions seen while we did not hold it (our own unbinds) are old news
        self.address.bind()
        self._refreshed_at = self.clock()
        self._longest_gap = 0.0
        self.active = True
        self.announcer.start()
        self._done("activate")

    def ensure(self) -> None:
        """After each cycle that keeps the VIP here: bound again (and announced) if it was
        deleted; its lifetime refreshed now if the refresh is overdue (run_due leaves a late
        refresh to this moment, see there)."""
        verdict = self.watch.look()
        since = self.clock() - self._refreshed_at
        gap, self._longest_gap = max(self._longest_gap, since), 0.0
        if verdict == DeletionWatch.NOTHING:
            if self.lifetime is not None and since >= self.refresh_every:
                self._refresh()
            return
        if verdict == DeletionWatch.OVERFLOW and self.address.is_bound():
            return  # notifications were lost (a burst of deletions): it is there all the same
        self.address.bind()
        self._refreshed_at = self.clock()
        if self.lifetime is not None and gap >= self.lifetime:
            logger.warning("%s: its lifetime ran out on %s (not refreshed for %.1fs: was this worker stalled?): "
                           "bound it again", self.vip, self.ifname, gap)
        else:
            logger.warning("%s was removed from %s by someone else: bound it again", self.vip, self.ifname)
        self.announcer.start()

    def announce_once(self) -> None:
        """One announcement now, the VIP left as it is: the answer to another host that claims
        it (link.worker.claim_guard); nothing when this host does not hold it."""
        if self.active:
            self.announcer.send_once()

    def deactivate(self, state: str = "", reason: str = "") -> None:
        self.active = False
        self.announcer.cancel()
        if self.address.unbind():
            logger.info("%s unbound from %s", self.vip, self.ifname)
        self._done("deactivate")

    def _refresh_due(self) -> float | None:
        """When the lifetime should be refreshed; None if not by run_due. A refresh puts the
        address back if it expired, so after a stall of half a lifetime or more (a frozen
        worker, a starved host) it waits for the next cycle: if a peer took the VIP meanwhile,
        the election says so first and the address is not bound again next to the peer's."""
        if not self.active or self.lifetime is None:
            return None
        if self.clock() - self._refreshed_at >= self.lifetime / 2:
            return None
        return self._refreshed_at + self.refresh_every

    def next_due(self) -> float | None:
        times = [t for t in (self.announcer.next_due(), self._refresh_due()) if t is not None]
        return min(times, default=None)

    def run_due(self) -> None:
        self.announcer.run_due()
        due = self._refresh_due()
        if due is not None and self.clock() >= due:
            self._refresh()

    def _refresh(self) -> None:
        self._longest_gap = max(self._longest_gap, self.clock() - self._refreshed_at)
        try:
            self.address.refresh()
        except OSError as exc:
            # Tried again at the next tick; if the address expires meanwhile, ensure() sees
            # its deletion and binds it again.
            logger.warning("%s: could not refresh the address lifetime: %s", self.vip, exc)
        self._refreshed_at = self.clock()

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    def packets_sent(self) -> int:
        return self.announcer.packets

    def is_bound(self) -> bool:
        return self.address.is_bound()

    def close(self, wait: float = 0.0) -> None:
        for closable in (self.announcer, self.address, self.watch):
            try:
                closable.close()
            except Exception:
                logger.debug("closing %r failed", closable, exc_info=True)
