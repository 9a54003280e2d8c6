"""link.wire.codec and link.wire.peers: the heartbeat datagram, faked datagrams, a fake clock."""
from __future__ import annotations

import struct

import pytest

from link.wire import codec
from link.wire.codec import Claim, Heartbeat, WireError
from link.wire.peers import PeerTable, endpoints_from_json, parse_endpoint

KEY = b"0123456789abcdef-shared"


def beat(host: str = "h2", seq: int = 1, boot: int = 7, claims: tuple[Claim, ...] = ()) -> Heartbeat:
    return Heartbeat(host, boot, seq, 1.0, claims or (Claim("198.51.100.7/32", True, True, True, 10),
                                                    Claim("2001:db8::7/128", False, False, True, 20),
                                                    Claim("198.51.100.9/24", False, False, False, 0)))


def test_a_heartbeat_round_trips_with_and_without_a_key() -> None:
    for key in (None, KEY):
        sent = beat()
        assert codec.decode(codec.encode(sent, key), key) == sent


def test_a_thousand_ipv6_vips_fit_in_one_udp_datagram() -> None:
    claims = tuple(Claim(f"2001:db8::{i:x}/128", i % 2 == 0, i % 3 == 0, True, i % 256) for i in range(1, 1001))
    data = codec.encode(beat(claims=claims), KEY)
    assert len(data) <= 65507 and len(data) <= codec.MAX_DATAGRAM
    assert codec.decode(data, KEY).claims == claims
    with pytest.raises(ValueError):
        codec.encode(beat(claims=claims + (Claim("198.51.100.1/32", True, False, True, 1),)))


@pytest.mark.parametrize("mangle, reason", [
    (lambda d: d[:10], "decode"),
    (lambda d: b"XYZ" + d[3:], "decode"),
    (lambda d: d + b"\x00", "decode"),
    (lambda d: d[:-3], "decode"),
    (lambda d: d[:3] + b"\x02" + d[4:], "decode"),  # another version
])
def test_a_malformed_datagram_is_refused_with_a_reason(mangle, reason) -> None:
    with pytest.raises(WireError) as raised:
        codec.decode(mangle(codec.encode(beat())))
    assert raised.value.reason == reason


def test_a_bad_host_name_is_refused() -> None:
    data = bytearray(codec.encode(beat(host="h2")))
    data[codec._HEADER.size] = ord("/")
    with pytest.raises(WireError, match="host name"):
        codec.decode(bytes(data))


def test_a_prefix_length_beyond_the_family_is_refused() -> None:
    data = codec.encode(beat(claims=(Claim("198.51.100.7/32", True, False, True, 1),)))
    bad = data[:-3] + struct.pack("!BBB", 33, 1, 1)
    with pytest.raises(WireError, match="prefix length"):
        codec.decode(bad)


def test_the_mac_is_checked_and_a_key_mismatch_is_an_auth_drop() -> None:
    signed = codec.encode(beat(), KEY)
    flipped = signed[:20] + bytes([signed[20] ^ 1]) + signed[21:]
    for data, key in ((flipped, KEY), (signed, b"another-key-0123456"), (signed, None), (codec.encode(beat()), KEY)):
        with pytest.raises(WireError) as raised:
            codec.decode(data, key)
        assert raised.value.reason == "auth"


def test_the_peer_table_keeps_the_newest_heartbeat_and_drops_replays() -> None:
    table = PeerTable("h1")
    assert table.heard(beat(seq=5), "198.51.100.12", 100.0) is not None
    assert table.heard(beat(seq=5), "198.51.100.12", 100.1) is None  # the same one again
    assert table.heard(beat(seq=4), "198.51.100.12", 100.2) is None  # an older one
    assert table.heard(beat(seq=1, boot=8), "198.51.100.12", 100.3) is not None  # the sender restarted
    assert table.heard(beat(seq=9, boot=7), "198.51.100.12", 100.4) is None  # from its previous boot
    assert table.counters.dropped == {"replay": 3} and table.counters.received == 2


def test_our_own_name_is_never_a_peer() -> None:
    table = PeerTable("h1")
    assert table.heard(beat(host="h1"), "198.51.100.99", 1.0) is None
    assert table.peers == {} and table.counters.dropped == {"self": 1}


def test_a_peer_is_dead_after_three_of_its_intervals() -> None:
    table = PeerTable("h1")
    table.heard(beat(), "198.51.100.12", 100.0)
    assert [p.host for p in table.alive(102.9)] == ["h2"]
    assert table.next_expiry(102.9) == pytest.approx(103.0)
    assert table.alive(103.0) == []
    assert table.forget_dead(200.0) == ["h2"]


def test_drops_are_logged_once_a_minute_per_source(caplog: pytest.LogCaptureFixture) -> None:
    table = PeerTable("h1")
    for i in range(5):
        table.dropped("auth", "198.51.100.66", 100.0 + i, "wrong MAC")
    table.dropped("auth", "198.51.100.67", 101.0, "wrong MAC")
    table.dropped("auth", "198.51.100.66", 160.5, "wrong MAC")
    lines = [r.getMessage() for r in caplog.records if "dropped a heartbeat" in r.getMessage()]
    assert len(lines) == 3 and table.counters.dropped == {"auth": 7}
    assert KEY.decode() not in caplog.text


@pytest.mark.parametrize("text, want", [
    ("198.51.100.2", ("198.51.100.2", 1314)), ("198.51.100.2:99", ("198.51.100.2", 99)),
    ("2001:db8::2", ("2001:db8::2", 1314)), ("[2001:db8::2]:99", ("2001:db8::2", 99)),
])
def test_endpoints_parse(text: str, want: tuple[str, int]) -> None:
    endpoint = parse_endpoint(text, 1314)
    assert (endpoint.address, endpoint.port) == want


@pytest.mark.parametrize("text", ["host.example", "198.51.100.2:0", "[2001:db8::2]x", "198.51.100.2:http"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(text, 1314)


def test_published_endpoints_keep_only_what_is_well_formed() -> None:
    raw = [{"address": "198.51.100.2", "port": 1314}, {"address": "nope", "port": 1}, {"address": "198.51.100.3"},
           {"address": "198.51.100.4", "port": True}, "junk", {"address": "2001:db8::5", "port": 1314}]
    assert [str(e) for e in endpoints_from_json(raw)] == ["198.51.100.2:1314", "[2001:db8::5]:1314"]
    assert endpoints_from_json({"address": "198.51.100.2"}) == []
