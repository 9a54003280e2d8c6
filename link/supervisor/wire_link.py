"""The supervisor's end of the wire: the UDP heartbeat socket, the peer table and each VIP's view.

No thread (the supervisor forks): the Arbiter's one selector watches the socket; `read()` drains
it, `tick()` sends what is due and `next_due()` bounds the loop's wait. The workers report what
this host says of their VIP (`wire` report: bound, lock, eligible, priority); one datagram per
peer per WIRE_INTERVAL carries all of them (link.wire.codec), and one more goes out at once when
one of them changes (at most one per MIN_GAP). What the peers say of a VIP goes to its worker as
a `wire_view` command when it changes; the worker decides (link.worker.wire_policy).

Step-down: when a peer that held a VIP says it no longer does, and this host holds that VIP
with the etcd lock, its worker is told to announce it again (clients that followed the other
host come back at once).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any, Callable, Iterable

from link.config import Config
from link.supervisor import observe
from link.supervisor.records import VipRecord, iso
from link.vocabulary.protocol import Message, Reannounce, WireReport, WireView
from link.wire import codec
from link.wire.arbitration import Heard, View
from link.wire.codec import Claim, Heartbeat, WireError
from link.wire.peers import PeerTable, dumps, endpoints_from_json, Endpoint
from link.wire.settings import read_key

logger = logging.getLogger(__name__)

MIN_GAP = 0.2  # seconds between two heartbeats sent on a change
READ_BURST = 256  # datagrams read per loop turn at most; the rest wait for the next turn
PEERS_FILE = "wire-peers.json"


def _plain(address: str) -> str:
    return address[7:] if address.startswith("::ffff:") else address


class WireLink:
    def __init__(self, config: Config, send_to_worker: Callable[[VipRecord, Message], bool],
                 clock: Callable[[], float] = time.monotonic, sock: socket.socket | None = None) -> None:
        self.config = config
        self.interval = config.wire_interval
        self.clock = clock
        self._send_to_worker = send_to_worker
        self.key = read_key(config.wire_key_file)  # checked at start by link.config: here only read
        self.table = PeerTable(config.hostname)
        self.boot = time.time_ns() // 1000
        self.seq = 0
        self.claims: dict[str, tuple[VipRecord, WireReport]] = {}  # vip -> its worker's last report
        self.views: dict[str, View] = {}  # vip -> the last view sent to its worker
        self.holder_heard: dict[str, float] = {}  # vip -> when a peer last said it holds it
        self.static = list(config.wire_peers)
        self.learned: list[Endpoint] = self._load_peers()
        self.heard_from: dict[str, Endpoint] = {}  # host -> where its heartbeats come from (accepted ones only)
        self._kept = list(self.learned)  # what STATE_DIR holds
        self.next_send = 0.0
        self.last_send = -MIN_GAP
        self._alive: set[str] = set()  # the peers alive at the last tick
        self.sock = sock if sock is not None else self._open()

    # -- socket -------------------------------------------------------------------------------
    def _open(self) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError:  # no IPv6 on this host: IPv4 peers only
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 peers too, as ::ffff:a.b.c.d
                sock.bind(("::", self.config.wire_port))
            else:
                sock.bind(("0.0.0.0", self.config.wire_port))
        except OSError:
            sock.close()  # the port is taken: the caller says so and the agent does not start
            raise
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), False)
        logger.info("wire: heartbeats on UDP port %d every %.1fs (%s), %s", self.config.wire_port, self.interval,
                    "signed (WIRE_KEY_FILE)" if self.key else "NOT signed: no WIRE_KEY_FILE",
                    f"static peers {', '.join(map(str, self.static))}" if self.static else
                    f"{len(self.learned)} peer(s) known from etcd")
        return sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # -- peers --------------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[Endpoint]:
        """Static WIRE_PEERS; else the peers from etcd plus, with WIRE_KEY_FILE, those heard (a
        host that started after the last read of etcd is answered at once, not 10 s later)."""
        if self.static:
            return self.static
        return list(dict.fromkeys([*self.learned, *self.heard_from.values()]))

    def _peers_path(self) -> str:
        return os.path.join(self.config.state_dir, PEERS_FILE)

    def _load_peers(self) -> list[Endpoint]:
        try:
            with open(self._peers_path(), encoding="utf-8") as handle:
                return endpoints_from_json(json.load(handle))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as exc:
            logger.warning("wire: %s cannot be read (%s): the peers are learned again from etcd", self._peers_path(), exc)
            return []

    def set_peers(self, raw: list[dict[str, Any]]) -> None:
        """The peers published in etcd (the API process reads them); kept in STATE_DIR for an outage."""
        found = endpoints_from_json(raw)
        if found == self.learned:
            return
        logger.info("wire: peers from etcd: %s", ", ".join(map(str, found)) or "none")
        self.learned = found
        self._keep_peers()
        self.next_send = 0.0  # tell the new ones at once

    def _keep_peers(self) -> None:
        """The endpoints known now (from etcd and heard) in STATE_DIR: an agent restarted during an
        etcd outage sends to them at once (a few bytes, written when the set changes)."""
        known = self.endpoints
        if self.static or known == self._kept:
            return
        tmp = self._peers_path() + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(dumps(known))
            os.replace(tmp, self._peers_path())
        except OSError as exc:
            logger.warning("wire: could not keep the peer list in %s: %s", self._peers_path(), exc)
            return
        self._kept = known

    # -- the workers' side --------------------------------------------------------------------
    def report(self, report: WireReport, record: VipRecord) -> None:
        previous = self.claims.get(record.ip)
        self.claims[record.ip] = (record, report)
        if previous is None or _said(previous[1]) != _said(report):
            self.next_send = min(self.next_send, self.last_send + MIN_GAP)
        if previous is None:
            self.views.pop(record.ip, None)  # a new worker: it gets the current view at once
        if report.decision != (previous[1].decision if previous else None):
            # `link-client events`: what the wire decided, also when the state stays (keep, wait).
            decision = report.decision or "etcd"
            observe.add_event(record, record.status, f"wire_{decision}", report.reason or "etcd answers: the election decides",
                              frm=record.status, source="wire")
        self._update_views([record.ip])
        record.wire = self.document(record.ip)

    def forget(self, record: VipRecord) -> None:
        """The VIP's worker is gone (or the VIP deleted): its claim leaves the next heartbeat."""
        if self.claims.pop(record.ip, None) is not None:
            self.views.pop(record.ip, None)
            self.holder_heard.pop(record.ip, None)
            self.next_send = min(self.next_send, self.last_send + MIN_GAP)

    # -- loop ---------------------------------------------------------------------------------
    def next_due(self) -> float:
        expiry = self.table.next_expiry(self.clock())
        return min(self.next_send, expiry) if expiry is not None else self.next_send

    def tick(self) -> None:
        """Each turn of the supervisor's loop: send what is due, notice peers falling silent."""
        try:
            self._tick()
        except Exception:  # the wire's own bug must not end the loop every VIP depends on
            logger.exception("wire: a heartbeat turn failed")
            self.next_send = self.clock() + self.interval  # tried again in an interval, not on every turn

    def read(self) -> None:
        """The socket is readable: take what came (at most READ_BURST datagrams)."""
        try:
            self._read()
        except Exception:
            logger.exception("wire: reading heartbeats failed")

    def _tick(self) -> None:
        now = self.clock()
        if now >= self.next_send:
            self._send_all(now)
        alive = {p.host for p in self.table.alive(now)}
        if alive != self._alive:
            # A peer fell silent (or came back): the views of every VIP may change.
            for host in self._alive - alive:
                logger.warning("wire: no heartbeat from %s for %.1fs: taken for dead", host, 3 * self.interval)
            self._alive = alive
            self._update_views(self.claims)
        for host in self.table.forget_dead(now):
            self.heard_from.pop(host, None)

    def _send_all(self, now: float) -> None:
        self.seq += 1
        beat = Heartbeat(self.config.hostname, self.boot, self.seq, self.interval,
                         tuple(_claim(vip, report) for vip, (_, report) in sorted(self.claims.items())))
        data = codec.encode(beat, self.key)
        for endpoint in self.endpoints:
            address = endpoint.address
            if self.sock.family == socket.AF_INET6 and ":" not in address:
                address = "::ffff:" + address
            try:
                self.sock.sendto(data, (address, endpoint.port))
                self.table.counters.sent += 1
            except OSError as exc:
                self.table.counters.send_errors += 1
                logger.debug("wire: sending to %s failed: %s", endpoint, exc)
        self.last_send = now
        self.next_send = now + self.interval

    def _read(self) -> None:
        now = self.clock()
        changed: set[str] = set()
        for _ in range(READ_BURST):
            try:
                data, source = self.sock.recvfrom(codec.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.debug("wire: receive failed: %s", exc)
                break
            address = _plain(source[0])
            try:
                beat = codec.decode(data, self.key)
            except WireError as exc:
                self.table.dropped(exc.reason, address, now, str(exc))
                continue
            before = self.table.peers.get(beat.host)
            old = dict(before.claims) if before is not None and before.alive(now) else {}
            peer = self.table.heard(beat, address, now)
            if peer is None:
                continue
            endpoint = Endpoint(address, source[1])
            # Only a signed heartbeat makes its source a place to send to: unsigned, a forged source
            # address would have this host send a datagram a second to whoever the forger names.
            if self.key is not None and self.heard_from.get(beat.host) != endpoint:
                self.next_send = min(self.next_send, self.last_send + MIN_GAP)  # a new peer: tell it at once
                self.heard_from[beat.host] = endpoint
                self._keep_peers()
            self._alive.add(beat.host)  # its claims are in the views from now: tick() sees it fall silent
            for claim in peer.claims.values():
                if claim.bound and claim.vip in self.claims:
                    self.holder_heard[claim.vip] = now
            if old != peer.claims:
                changed.update(old, peer.claims)
                self._stepped_down(peer.host, old, peer.claims)
        if changed:
            self._update_views(changed)

    def _stepped_down(self, host: str, old: dict[str, Claim], new: dict[str, Claim]) -> None:
        for vip, before in old.items():
            after = new.get(vip)
            if not before.bound or (after is not None and after.bound):
                continue
            mine = self.claims.get(vip)
            if mine is not None and mine[1].bound and mine[1].lock:
                logger.info("wire: %s no longer holds %s, which this host holds with the lock: announcing it again", host, vip)
                self._send_to_worker(mine[0], Reannounce(f"{host} stepped down from {vip}"))

    def _update_views(self, vips: Iterable[str]) -> None:
        now = self.clock()
        alive = self.table.alive(now)
        for vip in list(vips):
            mine = self.claims.get(vip)
            if mine is None:
                continue
            holders, candidates = [], []
            for peer in alive:
                claim = peer.claims.get(vip)
                if claim is None:
                    continue
                if claim.bound:
                    holders.append(Heard(peer.host, claim.priority, claim.lock))
                if claim.eligible:
                    candidates.append(Heard(peer.host, claim.priority, claim.lock))
            view = View(tuple(sorted(holders, key=lambda h: h.host)), tuple(sorted(candidates, key=lambda h: h.host)),
                        self.holder_heard.get(vip), self.interval)
            last = self.views.get(vip)
            if last is not None and (last.holders, last.candidates) == (view.holders, view.candidates):
                continue
            self.views[vip] = view
            self._send_to_worker(mine[0], WireView([h.to_json() for h in view.holders], [c.to_json() for c in view.candidates],
                                                   view.holder_heard_at, view.interval))
            mine[0].wire = self.document(vip)

    # -- what people see ----------------------------------------------------------------------
    def document(self, vip: str) -> dict[str, Any] | None:
        """The VIP document's `wire` field."""
        mine = self.claims.get(vip)
        if mine is None:
            return None
        report = mine[1]
        view = self.views.get(vip, View())
        return {
            "holders": [h.to_json() for h in view.holders],
            "candidates": [c.to_json() for c in view.candidates],
            "rank": None if report.rank is None else report.rank + 1,
            "decision": report.decision,
            "since": iso(report.since) if report.since is not None else None,
            "reason": report.reason,
            "says": {"bound": report.bound, "lock": report.lock, "eligible": report.eligible, "priority": report.priority},
        }

    def metrics(self) -> dict[str, Any]:
        now = self.clock()
        counters = self.table.counters
        return {"sent": counters.sent, "send_errors": counters.send_errors, "received": counters.received,
                "dropped": dict(counters.dropped), "peers_alive": len(self.table.alive(now)),
                "peers_known": len(self.endpoints)}


def _said(report: WireReport) -> tuple[bool, bool, bool, int]:
    return report.bound, report.lock, report.eligible, report.priority


def _claim(vip: str, report: WireReport) -> Claim:
    return Claim(vip, report.bound, report.lock, report.eligible, max(0, min(255, report.priority)))
