"""link.supervisor.wire_link: the supervisor's end of the wire, on a fake socket and a fake clock."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from link.config import load
from link.supervisor.records import VipRecord
from link.supervisor.wire_link import WireLink
from link.vocabulary.protocol import Message, Reannounce, WireReport, WireView
from link.vocabulary.vip import VipSpec
from link.vocabulary.wire_views import HeardPeer
from link.wire import codec
from link.wire.codec import Claim, Heartbeat
from tests.unit.fake_clock import Clock

VIP = "198.51.100.7/32"
PEER = ("198.51.100.12", 1314)


class FakeSocket:
    family = socket.AF_INET

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.inbox: list[tuple[bytes, tuple[str, int]]] = []

    def fileno(self) -> int:
        return 99

    def sendto(self, data: bytes, where: tuple[str, int]) -> int:
        self.sent.append((data, where))
        return len(data)

    def recvfrom(self, size: int) -> tuple[bytes, tuple[str, int]]:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.pop(0)

    def close(self) -> None:
        pass


@pytest.fixture
def wire(tmp_path: Path) -> tuple[WireLink, FakeSocket, Clock, list[tuple[str, Message]]]:
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path), "WIRE_PEERS": "198.51.100.12"},
                  check_interface=False)
    sock, clock, told = FakeSocket(), Clock(), []
    link = WireLink(config, lambda record, message: told.append((record.ip, message)) or True, clock, sock)  # type: ignore[arg-type]
    return link, sock, clock, told


def record(ip: str = VIP) -> VipRecord:
    return VipRecord(spec=VipSpec(id=f"vip-{ip}", ip=ip), since=0.0)


def peer_says(sock: FakeSocket, seq: int, *claims: Claim, host: str = "h2") -> None:
    sock.inbox.append((codec.encode(Heartbeat(host, 5, seq, 1.0, claims)), PEER))


def test_one_datagram_per_peer_per_interval_carries_every_vip(wire) -> None:
    link, sock, clock, _ = wire
    for ip in (VIP, "198.51.100.8/32"):
        link.report(WireReport(bound=ip == VIP, lock=ip == VIP, eligible=True, priority=10), record(ip))
    link.tick()
    assert len(sock.sent) == 1 and sock.sent[0][1] == PEER
    sent = codec.decode(sock.sent[0][0])
    assert sent.host == "h1" and [(c.vip, c.bound, c.lock) for c in sent.claims] == [
        ("198.51.100.7/32", True, True), ("198.51.100.8/32", False, False)]
    clock.now += 0.5
    link.tick()
    assert len(sock.sent) == 1  # not due yet
    clock.now += 0.5
    link.tick()
    assert len(sock.sent) == 2 and codec.decode(sock.sent[1][0]).seq == sent.seq + 1


def test_a_change_is_sent_at_once_but_not_more_than_once_per_min_gap(wire) -> None:
    link, sock, clock, _ = wire
    rec = record()
    link.report(WireReport(bound=True, lock=True, eligible=True, priority=10), rec)
    link.tick()
    clock.now += 0.05
    link.report(WireReport(bound=False, lock=False, eligible=True, priority=10), rec)
    link.tick()
    assert len(sock.sent) == 1  # within MIN_GAP of the last one
    assert link.next_due() == pytest.approx(clock.now + 0.15)
    clock.now = link.next_due()
    link.tick()
    assert len(sock.sent) == 2 and not codec.decode(sock.sent[1][0]).claims[0].bound


def test_the_worker_gets_a_view_when_what_is_heard_changes(wire) -> None:
    link, sock, clock, told = wire
    link.report(WireReport(bound=False, lock=False, eligible=True, priority=10), record())
    told.clear()
    peer_says(sock, 1, Claim(VIP, True, False, True, 5))
    link.read()
    assert [type(m) for _, m in told] == [WireView]
    view = told[0][1]
    assert view.holders == (HeardPeer("h2", 5, False),) and view.holder_heard_at == clock.now
    clock.now += 1
    peer_says(sock, 2, Claim(VIP, True, False, True, 5))  # the same again: no new view
    link.read()
    assert len(told) == 1
    # Silent for 3 intervals: dead, the view changes without a datagram.
    clock.now += 3
    link.tick()
    assert told[-1][1].holders == () and told[-1][1].holder_heard_at == clock.now - 3


def test_a_datagram_that_fails_is_dropped_and_counted(wire) -> None:
    link, sock, clock, told = wire
    link.report(WireReport(bound=False, lock=False, eligible=True, priority=10), record())
    sock.inbox.append((b"junk", PEER))
    sock.inbox.append((codec.encode(Heartbeat("h2", 5, 1, 1.0, ()), b"a-key-nobody-here-has"), PEER))
    link.read()
    assert link.metrics()["dropped"] == {"decode": 1, "auth": 1} and link.metrics()["peers_alive"] == 0


def test_a_step_down_makes_the_lock_holder_announce_again(wire) -> None:
    link, sock, clock, told = wire
    link.report(WireReport(bound=True, lock=True, eligible=True, priority=10), record())
    peer_says(sock, 1, Claim(VIP, True, False, True, 10))
    link.read()
    told.clear()
    peer_says(sock, 2, Claim(VIP, False, False, True, 10))
    link.read()
    assert any(isinstance(m, Reannounce) and "h2" in m.reason for _, m in told), told


def test_no_reannounce_without_the_lock(wire) -> None:
    link, sock, clock, told = wire
    link.report(WireReport(bound=True, lock=False, eligible=True, priority=10), record())
    peer_says(sock, 1, Claim(VIP, True, False, True, 10))
    link.read()
    peer_says(sock, 2, Claim(VIP, False, False, True, 10))
    link.read()
    assert not any(isinstance(m, Reannounce) for _, m in told)


def test_peers_from_etcd_are_kept_in_the_state_dir_and_heard_peers_are_answered(tmp_path: Path) -> None:
    key = tmp_path / "wire.key"
    key.write_bytes(b"0123456789abcdef-key")
    key.chmod(0o600)
    env = {"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)}
    config = load({**env, "WIRE_KEY_FILE": str(key)}, check_interface=False)
    sock, clock = FakeSocket(), Clock()
    link = WireLink(config, lambda record, message: True, clock, sock)  # type: ignore[arg-type]
    link.set_peers([{"address": "198.51.100.13", "port": 1314}, {"address": "junk", "port": 1}])
    assert json.loads((tmp_path / "wire-peers.json").read_text())["endpoints"] == [{"address": "198.51.100.13", "port": 1314}]
    again = WireLink(config, lambda record, message: True, clock, FakeSocket())  # type: ignore[arg-type]
    assert [str(e) for e in again.endpoints] == ["198.51.100.13:1314"]
    sock.inbox.append((codec.encode(Heartbeat("h2", 5, 1, 1.0, ()), b"0123456789abcdef-key"), PEER))
    link.read()
    assert [str(e) for e in link.endpoints] == ["198.51.100.13:1314", "198.51.100.12:1314"]
    # Heard peers are kept too: a restart during an outage sends to them at once.
    assert [str(e) for e in WireLink(config, lambda record, message: True, clock, FakeSocket()).endpoints] == [  # type: ignore[arg-type]
        "198.51.100.13:1314", "198.51.100.12:1314"]


def test_without_a_key_an_unknown_source_is_dropped_before_decoding_and_never_sent_to(tmp_path: Path) -> None:
    """Unsigned, the source address may be forged: decoding it would let anyone fill the peer
    table, sending there would make this host a reflector."""
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)}, check_interface=False)
    sock, clock = FakeSocket(), Clock()
    link = WireLink(config, lambda record, message: True, clock, sock)  # type: ignore[arg-type]
    peer_says(sock, 1, host="h2")
    link.read()
    assert link.metrics()["peers_alive"] == 0 and link.metrics()["dropped"] == {"source": 1} and link.endpoints == []
    link.set_peers([{"address": PEER[0], "port": PEER[1]}])  # published in etcd: now heard
    peer_says(sock, 2, host="h2")
    link.read()
    assert link.metrics()["peers_alive"] == 1


def test_the_document_says_what_the_wire_says(wire) -> None:
    link, sock, clock, _ = wire
    rec = record()
    link.report(WireReport(bound=False, lock=False, eligible=True, priority=10, decision="wait", rank=1, since=1.7e9,
                           reason="h2 holds the VIP"), rec)
    peer_says(sock, 1, Claim(VIP, True, True, True, 5))
    link.read()
    doc: dict[str, Any] = rec.to_api(link.config, 10)["wire"]
    assert doc["holders"] == [{"host": "h2", "priority": 5, "lock": True}] and doc["rank"] == 2
    assert doc["decision"] == "wait" and doc["since"].startswith("2023-")
    link.forget(rec)
    link.tick()
    assert codec.decode(sock.sent[-1][0]).claims == ()


def test_each_new_decision_is_an_event_of_the_vip(wire) -> None:
    link, sock, clock, _ = wire
    rec = record()
    link.report(WireReport(bound=True, lock=True, eligible=True, priority=10), rec)
    link.report(WireReport(bound=True, lock=False, eligible=True, priority=10, decision="keep", since=1.7e9,
                           reason="keeping the VIP: no holder with the lock is heard"), rec)
    link.report(WireReport(bound=True, lock=False, eligible=True, priority=10, decision="keep", since=1.7e9,
                           reason="keeping the VIP: no holder with the lock is heard"), rec)
    link.report(WireReport(bound=True, lock=True, eligible=True, priority=10), rec)
    assert [(e["event"], e["source"]) for e in rec.events] == [("wire_keep", "wire"), ("wire_etcd", "wire")]


def _json_schema(node: Any, schemas: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: refs inlined, `nullable` as a null type."""
    if isinstance(node, list):
        return [_json_schema(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _json_schema(schemas[node["$ref"].rsplit("/", 1)[1]], schemas)
    out = {k: _json_schema(v, schemas) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def test_the_document_matches_the_openapi_schema(wire) -> None:
    import jsonschema_rs

    from link.api.app import openapi_document

    schemas = openapi_document()["components"]["schemas"]
    validator = jsonschema_rs.validator_for(_json_schema(schemas["Wire"], schemas))
    link, sock, clock, _ = wire
    rec = record()
    link.report(WireReport(bound=True, lock=True, eligible=True, priority=10), rec)
    validator.validate(rec.wire)
    link.report(WireReport(bound=False, lock=False, eligible=True, priority=10, decision="wait", rank=1, since=1.7e9,
                           reason="h2 holds the VIP"), rec)
    peer_says(sock, 1, Claim(VIP, True, True, True, 5))
    link.read()
    validator.validate(rec.wire)
    assert not validator.is_valid({**rec.wire, "decision": "maybe"})


def test_a_fault_in_the_wire_never_ends_the_supervisors_loop(wire, caplog: pytest.LogCaptureFixture) -> None:
    link, sock, clock, _ = wire

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    sock.sendto = broken  # type: ignore[method-assign]
    sock.recvfrom = broken  # type: ignore[method-assign]
    link.tick()
    link.read()
    assert "a heartbeat turn failed" in caplog.text and "reading heartbeats failed" in caplog.text
    assert link.next_due() == clock.now + link.interval  # not again on every turn of the loop
