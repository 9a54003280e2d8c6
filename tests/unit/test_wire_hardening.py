"""The wire against a stranger on the LAN: what reaches the supervisor's loop, how long it may take,
what a forged or replayed heartbeat can do, and the key file's owner (issue 15's review)."""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from link.config import ConfigError, load
from link.supervisor.wire_link import WireLink
from link.wire import codec
from link.wire.codec import Heartbeat
from link.wire.peers import MAX_PEERS, MAX_INTERVAL, PeerTable
from tests.unit.fake_clock import Clock
from tests.unit.test_wire_link import FakeSocket

KEY = b"0123456789abcdef-key"
PEER = ("198.51.100.12", 1314)


def make(tmp_path: Path, sock: FakeSocket | None = None, clock: Clock | None = None, **env: str) -> WireLink:
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path), **env}, check_interface=False)
    return WireLink(config, lambda record, message: True, clock or Clock(), sock or FakeSocket())  # type: ignore[arg-type]


def key_file(tmp_path: Path) -> str:
    path = tmp_path / "wire.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return str(path)


def test_the_socket_is_bound_to_the_interface_and_to_wire_address(tmp_path: Path) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    link = WireLink(load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path), "WIRE_ADDRESS": "127.0.0.1",
                          "WIRE_PORT": str(port)}, check_interface=False), lambda record, message: True)
    try:
        assert link.sock.getsockname() == ("127.0.0.1", port)
        device = link.sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16)
        assert device.rstrip(b"\0") == b"lo"
    finally:
        link.close()


def test_a_read_turn_stops_when_its_time_is_spent(tmp_path: Path) -> None:
    """256 forged 1000-entry heartbeats took 8.7 s in one turn: the budget ends the turn, the rest waits."""
    sock = FakeSocket()
    link = make(tmp_path, sock, WIRE_PEERS=PEER[0])
    spent = [0.0]

    def budget() -> float:
        spent[0] += 0.008  # each datagram takes 8 ms of real time here
        return spent[0]

    link.budget_clock = budget
    for seq in range(1, 11):
        sock.inbox.append((codec.encode(Heartbeat("h2", 5, seq, 1.0, ())), PEER))
    link.read()
    assert 0 < len(sock.inbox) < 10 and link.metrics()["received"] == 10 - len(sock.inbox)


def test_a_declared_interval_is_clamped_to_wire_intervals_bounds() -> None:
    table = PeerTable("h1")
    peer = table.heard(Heartbeat("h2", 5, 1, 60.0, ()), PEER[0], 0.0)
    assert peer is not None and peer.interval == MAX_INTERVAL
    assert not peer.alive(3 * MAX_INTERVAL + 0.1)  # not 3 minutes
    assert table.forget_dead(30 * MAX_INTERVAL + 0.1) == ["h2"]


def test_strangers_never_crowd_out_a_known_peer() -> None:
    table = PeerTable("h1")
    for n in range(MAX_PEERS):
        assert table.heard(Heartbeat(f"forged-{n}", 5, 1, 1.0, ()), "198.51.100.99", 0.0) is not None
    assert table.heard(Heartbeat("stranger", 5, 1, 1.0, ()), "198.51.100.98", 0.1) is None
    assert table.heard(Heartbeat("h2", 5, 1, 1.0, ()), PEER[0], 0.2, known=True) is not None
    assert "h2" in table.peers and len(table.peers) == MAX_PEERS and "forged-0" not in table.peers


def test_the_unsigned_start_line_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with caplog.at_level(logging.INFO, logger="link.supervisor.wire_link"):
        link = make_real(tmp_path, port)
        link.close()
    assert [r.levelno for r in caplog.records if "NOT signed" in r.getMessage()] == [logging.WARNING]


def make_real(tmp_path: Path, port: int) -> WireLink:
    return WireLink(load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path), "WIRE_ADDRESS": "127.0.0.1",
                          "WIRE_PORT": str(port)}, check_interface=False), lambda record, message: True)


def test_the_boot_id_grows_across_restarts_even_when_the_clock_went_back(tmp_path: Path) -> None:
    future = 2 ** 60  # a boot id from a clock that was far ahead, then stepped back
    (tmp_path / "wire-boot").write_text(str(future))
    first = make(tmp_path)
    assert first.boot == future + 1
    assert make(tmp_path).boot == future + 2


def test_a_captured_signed_heartbeat_is_refused_after_the_peer_is_forgotten_and_after_a_restart(tmp_path: Path) -> None:
    sock, clock = FakeSocket(), Clock()
    link = make(tmp_path, sock, clock, WIRE_KEY_FILE=key_file(tmp_path))
    captured = codec.encode(Heartbeat("h2", 5, 1, 1.0, ()), KEY)
    sock.inbox.append((captured, PEER))
    link.read()
    assert link.metrics()["received"] == 1
    clock.now += 31  # silent for 30 intervals: forgotten
    link.tick()
    assert "h2" not in link.table.peers
    sock.inbox.append((captured, PEER))
    link.read()
    assert link.metrics()["dropped"] == {"replay": 1}
    link.close()  # the marks are kept in STATE_DIR
    assert json.loads((tmp_path / "wire-peers.json").read_text())["marks"] == {"h2": [5, 1]}
    again_sock = FakeSocket()
    again = make(tmp_path, again_sock, Clock(), WIRE_KEY_FILE=key_file(tmp_path))
    again_sock.inbox.append((captured, PEER))
    again.read()
    assert again.metrics()["dropped"] == {"replay": 1} and again.metrics()["received"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_key_file_of_another_owner_or_group_or_a_symlink_is_refused(tmp_path: Path) -> None:
    path = Path(key_file(tmp_path))
    env = {"INTERFACE": "lo", "HOSTNAME": "h1"}
    os.chown(path, 65534, 0)
    with pytest.raises(ConfigError, match="belongs to uid 65534"):
        load({**env, "WIRE_KEY_FILE": str(path)}, check_interface=False)
    os.chown(path, 0, 65534)
    assert load({**env, "WIRE_KEY_FILE": str(path)}, check_interface=False).wire_key_file  # 0600: the group cannot read
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="readable by group 65534"):
        load({**env, "WIRE_KEY_FILE": str(path)}, check_interface=False)
    os.chown(path, 0, 0)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="is a symbolic link") as raised:
        load({**env, "WIRE_KEY_FILE": str(link)}, check_interface=False)
    assert "\n" not in str(raised.value)


def test_the_wire_view_carries_typed_peers_and_refuses_a_malformed_one() -> None:
    from link.vocabulary import protocol
    from link.vocabulary.protocol import ProtocolError, WireView
    from link.vocabulary.wire_views import HeardPeer

    view = WireView((HeardPeer("h2", 5, True),), (HeardPeer("h3", 10),), 12.5, 0.8)
    assert protocol.decode(protocol.encode(view), protocol.Family.COMMAND) == view
    for bad in ([{"host": "h2", "priority": "5", "lock": True}], [{"host": "h2"}], [{"host": "h2", "priority": 5, "x": 1}], ["h2"]):
        with pytest.raises(ProtocolError, match="holders"):
            protocol.decode({**protocol.encode(view), "holders": bad}, protocol.Family.COMMAND)


def test_every_wire_decision_has_its_event_name() -> None:
    from link.vocabulary.wire_views import WireEvent
    from link.wire.arbitration import Decision

    assert {WireEvent.of(d.value) for d in Decision} | {WireEvent.of(None)} == set(WireEvent)


def test_a_clean_stop_of_the_supervisor_closes_the_wire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing is what writes the replay marks at a clean stop (README: "and at a clean stop")."""
    from link.supervisor import arbiter as arbiter_mod
    from link.supervisor.arbiter import Arbiter
    from link.supervisor.store import VipStore
    from tests.unit.test_arbiter import FakeOps

    closed = []

    class Wire:
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(arbiter_mod, "setproctitle", lambda title: None)
    config = load({"INTERFACE": "lo", "HOSTNAME": "h1", "STATE_DIR": str(tmp_path)}, check_interface=False)
    arb = Arbiter(config, VipStore(str(tmp_path)), FakeOps(), clock=Clock())
    monkeypatch.setattr(arb, "install_signals", lambda: None)
    monkeypatch.setattr(arb, "boot", lambda: None)
    monkeypatch.setattr(arb, "turn", lambda max_wait=1.0: False)  # the last turn: every worker stopped
    arb.wire = Wire()  # type: ignore[assignment]
    arb.run()
    assert closed == [True]
