"""The `arp` binder (the default, LinK's behaviour): netlink, then gratuitous ARP or NA."""
from __future__ import annotations

import logging
import time

from link.netlink import AddressBinder, AddressEvents
from link.worker.announce import Announcer
from link.worker.binders.runner import idle_status, iso_now

logger = logging.getLogger(__name__)

FULL_CHECK_EVERY = 10.0  # seconds: a dump even without a notification, should one be missed


class ArpBinder:
    kind = "arp"

    def __init__(self, ifname: str, vip: str, count: int, interval: float) -> None:
        self.ifname = ifname
        self.vip = vip
        self.address = AddressBinder(ifname, vip)
        try:
            self.events = AddressEvents()
            self.announcer = Announcer(ifname, vip, self.address.mac(), count, interval)
        except BaseException:
            self.address.close()
            raise
        self._checked_at = 0.0
        self._status = idle_status()

    def _done(self, action: str) -> None:
        if self._status["action"] != action:
            self._status = {"ok": True, "action": action, "error": None, "attempts": 1, "since": iso_now()}

    def activate(self, reason: str = "") -> None:
        """Bind (if not bound yet) and start a round of announcements, the first at once."""
        self.address.bind()
        self.announcer.start()
        self._done("activate")

    def ensure(self) -> None:
        """Bound again (and announced) if someone removed the VIP from the interface.

        Looked at only when an address of this host changed (or every FULL_CHECK_EVERY s)."""
        now = time.monotonic()
        if not self.events.changed() and now - self._checked_at < FULL_CHECK_EVERY:
            return
        self._checked_at = now
        if not self.address.is_bound():
            self.address.bind()
            logger.warning("%s was removed from %s by someone else: bound it again", self.vip, self.ifname)
            self.announcer.start()

    def deactivate(self, state: str = "", reason: str = "") -> None:
        self.announcer.cancel()
        if self.address.unbind():
            logger.info("%s unbound from %s", self.vip, self.ifname)
        self._done("deactivate")

    def next_due(self) -> float | None:
        return self.announcer.next_due()

    def run_due(self) -> None:
        self.announcer.run_due()

    def status(self) -> dict:
        return dict(self._status)

    def is_bound(self) -> bool:
        return self.address.is_bound()

    def close(self, wait: float = 0.0) -> None:
        for closable in (self.announcer, self.address, self.events):
            try:
                closable.close()
            except Exception:
                logger.debug("closing %r failed", closable, exc_info=True)
