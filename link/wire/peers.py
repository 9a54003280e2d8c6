"""Who is heard on the wire, what each says, and where heartbeats go (pure: the caller gives the time).

A peer is a host name heard in a heartbeat that passed the codec (and its MAC, with a key).
Its claims are those of its newest heartbeat; it is alive while its last heartbeat is younger
than DEAD_RATIO of its own interval (exoip's dead ratio, VRRP's "3 adverts"). A heartbeat whose
(boot id, sequence) is not newer than the last one kept from that host is a replay (or came
late) and is dropped; that high-water mark outlives the peer (forgotten after 30 silent
intervals) and is stored with the endpoints, so a captured datagram is not taken again later. The endpoints heartbeats go to are the peers published in etcd (the API
process reads them) or the static WIRE_PEERS; they are kept as a plain list the supervisor
stores in STATE_DIR, so that an agent restarted during an etcd outage still knows them.
"""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from link.wire.codec import Claim, Heartbeat

logger = logging.getLogger(__name__)

DEAD_RATIO = 3
MAX_PEERS = 256  # endpoints and hosts kept: a bigger list is someone else's junk
MAX_MARKS = 4 * MAX_PEERS  # (boot, seq) high-water marks kept after their peers are forgotten
# A declared interval is taken within WIRE_INTERVAL's own bounds: a forged "60 s" must not keep a
# silent host alive for 3 minutes (and in the table for 30).
MIN_INTERVAL, MAX_INTERVAL = 0.1, 10.0
LOG_EVERY = 60.0  # one line per source per minute about dropped datagrams


@dataclass(frozen=True)
class Endpoint:
    address: str  # compressed IPv4 or IPv6
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def to_json(self) -> dict[str, object]:
        return {"address": self.address, "port": self.port}


def parse_endpoint(text: str, default_port: int) -> Endpoint:
    """"198.51.100.2", "198.51.100.2:1314", "2001:db8::2" or "[2001:db8::2]:1314"; ValueError if none."""
    raw = text.strip()
    port = default_port
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r} is not an address[:port]")
            port = int(rest[1:])
    elif raw.count(":") == 1:
        host, _, port_text = raw.partition(":")
        port = int(port_text)
    else:
        host = raw
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} out of range")
    return Endpoint(ipaddress.ip_address(host).compressed, port)


def endpoints_from_json(data: object) -> list[Endpoint]:
    """Endpoints from a stored or published list; what is malformed is left out (never raises)."""
    found: list[Endpoint] = []
    for item in data[:MAX_PEERS] if isinstance(data, list) else []:
        try:
            port = item["port"]
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                continue
            found.append(Endpoint(ipaddress.ip_address(item["address"]).compressed, port))
        except (KeyError, TypeError, ValueError):
            continue
    return found


@dataclass
class Peer:
    host: str
    source: str  # the address its last heartbeat came from
    heard_at: float
    interval: float
    boot: int
    seq: int
    claims: dict[str, Claim] = field(default_factory=dict)
    known: bool = False  # its source is a configured or published peer endpoint

    def alive(self, now: float) -> bool:
        return now - self.heard_at < DEAD_RATIO * self.interval


@dataclass
class Counters:
    sent: int = 0
    received: int = 0
    send_errors: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class PeerTable:
    """The peers heard, by host name; `own` (this host's name) is never one of them."""

    def __init__(self, own: str) -> None:
        self.own = own
        self.peers: dict[str, Peer] = {}
        self.marks: dict[str, tuple[int, int]] = {}  # host -> newest (boot, seq) accepted, also once forgotten
        self.counters = Counters()
        self._logged: dict[str, float] = {}  # source -> when a drop from it was last logged

    def heard(self, beat: Heartbeat, source: str, now: float, known: bool = False) -> Peer | None:
        """Keep a decoded heartbeat; None (counted) when it is a replay, our own, or one host too many.
        `known`: its source is a peer endpoint; such a host is never kept out by unknown ones."""
        if beat.host == self.own:
            # Our own name from elsewhere: another host misconfigured with our HOSTNAME (or a
            # loop); never a peer, or this host would yield to itself.
            self.dropped("self", source, now, f"a heartbeat with this host's own name {beat.host!r}")
            return None
        mark = self.marks.get(beat.host)
        if mark is not None and (beat.boot, beat.seq) <= mark:
            self.dropped("replay", source, now, f"{beat.host}: boot {beat.boot} seq {beat.seq} is not newer than "
                                                f"boot {mark[0]} seq {mark[1]}")
            return None
        if beat.host not in self.peers and len(self.peers) >= MAX_PEERS and not self._make_room(now, known):
            self.dropped("peers", source, now, f"more than {MAX_PEERS} peers: {beat.host} ignored")
            return None
        self.counters.received += 1
        interval = max(MIN_INTERVAL, min(MAX_INTERVAL, beat.interval))
        fresh = Peer(beat.host, source, now, interval, beat.boot, beat.seq, {c.vip: c for c in beat.claims}, known)
        self.peers[beat.host] = fresh
        self._mark(beat.host, (beat.boot, beat.seq))
        return fresh

    def _make_room(self, now: float, known: bool) -> bool:
        """The table is full: forget the dead; a host from a known endpoint then takes the place of
        the least recently heard one from an unknown source."""
        self.forget_dead(now)
        if len(self.peers) < MAX_PEERS:
            return True
        strangers = [p for p in self.peers.values() if not p.known]
        if not known or not strangers:
            return False
        oldest = min(strangers, key=lambda p: p.heard_at)
        logger.warning("wire: peer table full: %s (from %s) forgotten for a known peer", oldest.host, oldest.source)
        del self.peers[oldest.host]
        return True

    def _mark(self, host: str, mark: tuple[int, int]) -> None:
        self.marks.pop(host, None)  # re-inserted last: the dict's order is the age of the marks
        self.marks[host] = mark
        while len(self.marks) > MAX_MARKS:
            stale = next(h for h in self.marks if h not in self.peers)
            del self.marks[stale]

    def load_marks(self, data: object) -> None:
        """Marks stored by an earlier run (malformed ones left out)."""
        for host, mark in data.items() if isinstance(data, dict) else ():
            if (isinstance(host, str) and isinstance(mark, list) and len(mark) == 2
                    and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in mark)):
                self._mark(host, (mark[0], mark[1]))

    def dropped(self, reason: str, source: str, now: float, text: str) -> None:
        """Count a dropped datagram; log it at most once a minute per source (never its content's secrets:
        the MAC and key are not in `text`)."""
        self.counters.drop(reason)
        last = self._logged.get(source)
        if last is None or now - last >= LOG_EVERY:
            if len(self._logged) >= MAX_PEERS:
                self._logged.clear()
            self._logged[source] = now
            logger.warning("wire: dropped a heartbeat from %s (%s): %s; next drops from it logged in %.0fs at the earliest",
                           source, reason, text, LOG_EVERY)

    def forget_dead(self, now: float) -> list[str]:
        """Drop peers silent for ten dead intervals (their claims are long gone from every view)."""
        gone = [h for h, p in self.peers.items() if now - p.heard_at > 10 * DEAD_RATIO * p.interval]
        for host in gone:
            del self.peers[host]
        return gone

    def alive(self, now: float) -> list[Peer]:
        return [p for p in self.peers.values() if p.alive(now)]

    def next_expiry(self, now: float) -> float | None:
        """When the next live peer falls silent for good (a view changes then, without a datagram)."""
        times = [p.heard_at + DEAD_RATIO * p.interval for p in self.peers.values() if p.alive(now)]
        return min(times, default=None)
