"""The supervisor's end of the wire: the UDP heartbeat socket, the peer table and each VIP's view.

No thread (the supervisor forks): the Arbiter's one selector watches the socket; `read()` drains
it, `tick()` sends what is due and `next_due()` bounds the loop's wait. The workers report what
this host says of their VIP (`wire` report: bound, lock, eligible, priority); one datagram per
peer per WIRE_INTERVAL carries all of them (link.wire.codec), and one more goes out at once when
one of them changes (at most one per MIN_GAP). What the peers say of a VIP goes to its worker as
a `wire_view` command when it changes; the worker decides (link.worker.wire_policy).

Who may fill the table: without WIRE_KEY_FILE, only datagrams from a known peer endpoint (WIRE_PEERS,
or published in etcd) are decoded at all; with it, any source whose MAC is right. The socket is
bound to INTERFACE (SO_BINDTODEVICE: the VIPs' LAN only) and to WIRE_ADDRESS when set, and one
turn of the loop reads for READ_BUDGET seconds at most, so a flood delays the loop, never stops it.

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
from link.vocabulary.wire_views import WireEvent
from link.wire import codec
from link.wire.arbitration import Heard, View
from link.wire.codec import Claim, Heartbeat, WireError
from link.wire.peers import PeerTable, endpoints_from_json, Endpoint
from link.wire.settings import read_key

logger = logging.getLogger(__name__)

MIN_GAP = 0.2  # seconds between two heartbeats sent on a change
READ_BURST = 256  # datagrams read per loop turn at most; the rest wait for the next turn
READ_BUDGET = 0.02  # seconds of reading per loop turn at most (the workers' pipes wait meanwhile)
PEERS_FILE = "wire-peers.json"  # the endpoints and the replay high-water marks, kept for restarts
BOOT_FILE = "wire-boot"  # the last boot id used: the next one is larger even after a clock step back
KEEP_MARKS_EVERY = 10.0  # seconds between two writes of the high-water marks (and at close)


def _plain(address: str) -> str:
    return address[7:] if address.startswith("::ffff:") else address


class WireLink:
    def __init__(self, config: Config, send_to_worker: Callable[[VipRecord, Message], bool],
                 clock: Callable[[], float] = time.monotonic, sock: socket.socket | None = None,
                 budget_clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.interval = config.wire_interval
        self.clock = clock
        self._send_to_worker = send_to_worker
        self.key = read_key(config.wire_key_file)  # checked at start by link.config: here only read
        self.budget_clock = budget_clock  # the real time a read turn takes (the test's clock stands still)
        self.table = PeerTable(config.hostname)
        self.boot = self._next_boot()
        self.seq = 0
        self.claims: dict[str, tuple[VipRecord, WireReport]] = {}  # vip -> its worker's last report
        self.views: dict[str, View] = {}  # vip -> the last view sent to its worker
        self.holder_heard: dict[str, float] = {}  # vip -> when a peer last said it holds it
        self.static = list(config.wire_peers)
        self.learned: list[Endpoint] = self._load_peers()
        self.heard_from: dict[str, Endpoint] = {}  # host -> where its heartbeats come from (accepted ones only)
        self._kept: tuple[list[Endpoint], dict[str, tuple[int, int]]] = (list(self.learned), dict(self.table.marks))
        self._marks_kept_at = clock()
        self.next_send = 0.0
        self.last_send = -MIN_GAP
        self._alive: set[str] = set()  # the peers alive at the last tick
        self.sock = sock if sock is not None else self._open()

    # -- socket -------------------------------------------------------------------------------
    def _open(self) -> socket.socket:
        address = self.config.wire_address
        family = socket.AF_INET if address and ":" not in address else socket.AF_INET6
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:  # no IPv6 on this host: IPv4 peers only
            family, sock = socket.AF_INET, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            # Heartbeats come from the VIPs' LAN only: a datagram that reached another interface
            # (a routed network, the internet side) is not delivered to this socket at all.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.config.interface.encode())
            if family == socket.AF_INET6 and not address:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 peers too, as ::ffff:a.b.c.d
            sock.bind((address or ("::" if family == socket.AF_INET6 else "0.0.0.0"), self.config.wire_port))
        except OSError:
            sock.close()  # the port is taken, or the address is not here: the caller says so and the agent does not start
            raise
        sock.setblocking(False)
        os.set_inheritable(sock.fileno(), False)
        logger.log(logging.INFO if self.key else logging.WARNING,
                   "wire: heartbeats on UDP %s port %d of %s every %.1fs (%s), %s", address or "any address",
                   self.config.wire_port, self.config.interface, self.interval,
                   "signed (WIRE_KEY_FILE)" if self.key else
                   "NOT signed: no WIRE_KEY_FILE; any host of the LAN can forge a known peer's heartbeat",
                   f"static peers {', '.join(map(str, self.static))}" if self.static else
                   f"{len(self.learned)} peer(s) known from etcd")
        return sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self._keep_peers()
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

    def _boot_path(self) -> str:
        return os.path.join(self.config.state_dir, BOOT_FILE)

    def _next_boot(self) -> int:
        """A boot id larger than any this host used before: the stored one + 1, or the clock in
        microseconds when larger (a lost STATE_DIR still gives a fresh one, a clock stepped back
        does not make the peers take this host's heartbeats for replays)."""
        stored = 0
        try:
            with open(self._boot_path(), encoding="ascii") as handle:
                stored = int(handle.read(32).strip() or 0)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            logger.warning("wire: %s cannot be read (%s): the boot id comes from the clock", self._boot_path(), exc)
        boot = max(stored + 1, time.time_ns() // 1000)
        self._write(self._boot_path(), str(boot))
        return boot

    def _write(self, path: str, text: str) -> bool:
        tmp = path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("wire: could not write %s: %s", path, exc)
            return False
        return True

    def _load_peers(self) -> list[Endpoint]:
        try:
            with open(self._peers_path(), encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as exc:
            logger.warning("wire: %s cannot be read (%s): the peers are learned again from etcd", self._peers_path(), exc)
            return []
        if isinstance(data, list):  # written before the marks were kept
            return endpoints_from_json(data)
        if not isinstance(data, dict):
            return []
        self.table.load_marks(data.get("marks"))
        return endpoints_from_json(data.get("endpoints"))

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
        """The endpoints known now (from etcd and heard) and the replay high-water marks in
        STATE_DIR: an agent restarted during an etcd outage sends to them at once, and does not
        take a captured datagram again (a few KB, written when the endpoints change, the marks at
        most every KEEP_MARKS_EVERY seconds and at close)."""
        known = [] if self.static else self.endpoints
        marks = dict(self.table.marks)
        if (known, marks) == self._kept:
            return
        data = {"endpoints": [e.to_json() for e in known], "marks": {h: list(m) for h, m in marks.items()}}
        if self._write(self._peers_path(), json.dumps(data)):
            self._kept = (known, marks)
            self._marks_kept_at = self.clock()

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
            observe.add_event(record, record.status, WireEvent.of(report.decision).value,
                              report.reason or "etcd answers: the election decides",
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
        if now - self._marks_kept_at >= KEEP_MARKS_EVERY:
            self._marks_kept_at = now
            self._keep_peers()

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

    def _known_sources(self) -> set[str]:
        return {e.address for e in (*self.static, *self.learned)}

    def _read(self) -> None:
        now = self.clock()
        changed: set[str] = set()
        known = self._known_sources()
        deadline = self.budget_clock() + READ_BUDGET
        for _ in range(READ_BURST):
            if self.budget_clock() >= deadline:
                break  # the rest waits for the next turn (the selector says again the socket is readable)
            try:
                data, source = self.sock.recvfrom(codec.MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                logger.debug("wire: receive failed: %s", exc)
                break
            address = _plain(source[0])
            if self.key is None and address not in known:
                # Unsigned, anyone could fill the table: only known endpoints are worth decoding.
                self.table.dropped("source", address, now, "not a peer known from WIRE_PEERS or etcd (no WIRE_KEY_FILE)")
                continue
            try:
                beat = codec.decode(data, self.key)
            except WireError as exc:
                self.table.dropped(exc.reason, address, now, str(exc))
                continue
            before = self.table.peers.get(beat.host)
            old = dict(before.claims) if before is not None and before.alive(now) else {}
            peer = self.table.heard(beat, address, now, address in known)
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
            self._send_to_worker(mine[0], WireView(view.holders, view.candidates, view.holder_heard_at, view.interval))
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
