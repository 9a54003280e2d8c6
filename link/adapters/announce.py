"""Telling the link who owns the VIP: gratuitous ARP (IPv4) and unsolicited NA (IPv6).

Frames are built once with scapy and sent on one AF_PACKET socket kept open for the worker's
life: scapy's sendp() opens and closes a socket per call (~24 ms), a kept socket ~5 us.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import time

from scapy.layers.l2 import ARP, Ether
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6

logger = logging.getLogger(__name__)

BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_NODES_MAC = "33:33:00:00:00:01"


def announcement_frames(vip: str, mac: str) -> list[bytes]:
    """The frames of one announcement.

    IPv4: an ARP request with sender IP = target IP = VIP (updates existing entries at once),
    and an ARP reply whose target MAC is our own (a reply to ff:ff:.. is ignored by receivers
    whose entry is younger than their 1 s locktime). IPv6: an unsolicited neighbour
    advertisement to all nodes with the override flag and our link-layer address.
    """
    ip = ipaddress.ip_interface(vip).ip
    if ip.version == 4:
        addr = str(ip)
        request = Ether(dst=BROADCAST, src=mac) / ARP(op=1, hwsrc=mac, psrc=addr, hwdst="00:00:00:00:00:00", pdst=addr)
        reply = Ether(dst=BROADCAST, src=mac) / ARP(op=2, hwsrc=mac, psrc=addr, hwdst=mac, pdst=addr)
        return [bytes(request), bytes(reply)]
    na = (
        Ether(dst=ALL_NODES_MAC, src=mac)
        / IPv6(src=str(ip), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(tgt=str(ip), R=0, S=0, O=1)
        / ICMPv6NDOptDstLLAddr(lladdr=mac)
    )
    return [bytes(na)]


class Announcer:
    """Sends `count` announcements `interval` apart, the first at once, on demand."""

    def __init__(self, ifname: str, vip: str, mac: str, count: int, interval: float) -> None:
        self.vip = vip
        self.count = count
        self.interval = interval
        self.frames = announcement_frames(vip, mac)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self._sock.bind((ifname, 0))
        self._left = 0
        self._next_due = 0.0
        self.sent = 0  # announcements (rounds of frames) sent
        self.packets = 0  # frames sent, for the metrics

    def start(self) -> None:
        """(Re)start a round of announcements; the first goes out now."""
        self._left = self.count
        self._next_due = time.monotonic()
        self.run_due()

    def cancel(self) -> None:
        self._left = 0

    def next_due(self) -> float | None:
        return self._next_due if self._left > 0 else None

    def run_due(self) -> None:
        now = time.monotonic()
        while self._left > 0 and now >= self._next_due:
            self.send_once()
            self._left -= 1
            self._next_due = now + self.interval

    def send_once(self) -> bool:
        """One announcement now, beside any round under way (an answer to another claimant,
        link.worker.claim_guard); False if a frame could not go."""
        for frame in self.frames:
            try:
                self._sock.send(frame)
                self.packets += 1
            except OSError as exc:
                # The link may be down for a moment: the next announcement will try again.
                logger.warning("could not announce %s: %s", self.vip, exc)
                return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()
