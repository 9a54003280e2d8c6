"""The heartbeat datagram: one per peer per interval, every VIP the sender competes for in it.

Layout (network byte order), 26 bytes of header, the host name, then the entries, then the MAC if any:

    magic "LKW" | version (1) | flags (1) | boot id (8) | sequence (8) | interval ms (2)
    | entry count (2) | host length (1) | host (UTF-8, at most 253 bytes)
    entry: family (1: 4 or 6) | address (4 or 16) | prefix length (1) | bits (1) | priority (1)
    [HMAC-SHA256 over everything before it (32), when flags has SIGNED]

An IPv4 entry is 8 bytes, an IPv6 one 20: MAX_VIPS (1000) IPv6 VIPs make about 20 KB, well
inside one UDP datagram (65507 bytes). The boot id grows with each start of the sender (a
counter it stores, at least its start time in microseconds) and the sequence counts up from 1 within one boot: (boot id, sequence) only grows, so a
datagram seen again (replayed, or reordered by the network) is told apart from a new one.
Decoding is strict: anything short, long, of another version or with a bad MAC is refused
with WireError, whose `reason` is the metric label of the drop.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass

MAGIC = b"LKW"
VERSION = 1
SIGNED = 0x01  # flags: a MAC follows the entries
MAC_SIZE = 32
MAX_HOST = 253  # a DNS name's longest; the length is one byte
MAX_ENTRIES = 1000  # link.config.MAX_MAX_VIPS: one host never competes for more
_HEADER = struct.Struct("!3sBBQQHHB")
_ENTRY_TAIL = struct.Struct("!BBB")
# entry bits
BOUND, LOCK, ELIGIBLE = 0x01, 0x02, 0x04
MAX_DATAGRAM = _HEADER.size + MAX_HOST + MAX_ENTRIES * (1 + 16 + _ENTRY_TAIL.size) + MAC_SIZE


class WireError(ValueError):
    """A datagram that is not a heartbeat link accepts; `reason` labels the drop (decode, auth)."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True)
class Claim:
    """What a host says about one VIP."""

    vip: str  # CIDR, as link names VIPs: "198.51.100.7/32"
    bound: bool  # the address is on the sender's interface
    lock: bool  # the sender holds the VIP's etcd lock (it could reach etcd on its last cycle)
    eligible: bool  # not FAILING: it may take the VIP
    priority: int  # 0..255, lowest wins (LinK's rule)


@dataclass(frozen=True)
class Heartbeat:
    host: str
    boot: int
    seq: int
    interval: float  # seconds: how often the sender sends (its peers judge its silence by it)
    claims: tuple[Claim, ...]


def _entry(claim: Claim) -> bytes:
    iface = ipaddress.ip_interface(claim.vip)
    bits = (BOUND if claim.bound else 0) | (LOCK if claim.lock else 0) | (ELIGIBLE if claim.eligible else 0)
    return bytes([iface.version]) + iface.ip.packed + _ENTRY_TAIL.pack(iface.network.prefixlen, bits, claim.priority)


def encode(beat: Heartbeat, key: bytes | None = None) -> bytes:
    host = beat.host.encode()
    if not host or len(host) > MAX_HOST:
        raise ValueError(f"host name of {len(host)} bytes (1..{MAX_HOST})")
    if len(beat.claims) > MAX_ENTRIES:
        raise ValueError(f"{len(beat.claims)} VIPs in one heartbeat (at most {MAX_ENTRIES})")
    interval_ms = max(1, min(0xFFFF, round(beat.interval * 1000)))
    head = _HEADER.pack(MAGIC, VERSION, SIGNED if key else 0, beat.boot, beat.seq, interval_ms, len(beat.claims), len(host))
    body = head + host + b"".join(_entry(c) for c in beat.claims)
    return body + hmac.new(key, body, hashlib.sha256).digest() if key else body


def decode(data: bytes, key: bytes | None = None) -> Heartbeat:
    """The heartbeat in `data`; WireError if it is none, or (with `key`) if its MAC is wrong or absent.
    Without a key, a signed datagram is refused too: the two ends disagree on WIRE_KEY_FILE."""
    if len(data) < _HEADER.size or len(data) > MAX_DATAGRAM:
        raise WireError("decode", f"a datagram of {len(data)} bytes")
    magic, version, flags, boot, seq, interval_ms, count, host_len = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise WireError("decode", f"not a link heartbeat (magic {magic!r}, version {version})")
    signed = bool(flags & SIGNED)
    if signed != bool(key):
        raise WireError("auth", "signed, and this host has no WIRE_KEY_FILE" if signed else "not signed (WIRE_KEY_FILE is set here)")
    end = len(data) - (MAC_SIZE if signed else 0)
    if key:
        expected = hmac.new(key, data[:end], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, data[end:]):
            raise WireError("auth", "wrong MAC (another WIRE_KEY_FILE?)")
    if not 0 < host_len <= MAX_HOST or count > MAX_ENTRIES or interval_ms == 0 or seq == 0:
        raise WireError("decode", f"bad header (host {host_len} bytes, {count} entries, interval {interval_ms} ms, seq {seq})")
    pos = _HEADER.size + host_len
    try:
        host = data[_HEADER.size:pos].decode()
    except UnicodeDecodeError:
        raise WireError("decode", "host name is not UTF-8") from None
    if "/" in host or any(c.isspace() or not c.isprintable() for c in host):
        raise WireError("decode", f"host name {host!r:.70}")
    claims: list[Claim] = []
    for _ in range(count):
        if pos >= end:
            raise WireError("decode", f"{count} entries announced, {len(claims)} present")
        family = data[pos]
        size = {4: 4, 6: 16}.get(family)
        if size is None or pos + 1 + size + _ENTRY_TAIL.size > end:
            raise WireError("decode", f"entry {len(claims)}: family {family} or truncated")
        raw = data[pos + 1:pos + 1 + size]
        prefix, bits, priority = _ENTRY_TAIL.unpack_from(data, pos + 1 + size)
        pos += 1 + size + _ENTRY_TAIL.size
        try:
            vip = ipaddress.ip_interface((ipaddress.ip_address(raw), prefix)).with_prefixlen
        except ValueError:
            raise WireError("decode", f"entry {len(claims)}: prefix length {prefix}") from None
        claims.append(Claim(vip, bool(bits & BOUND), bool(bits & LOCK), bool(bits & ELIGIBLE), priority))
    if pos != end:
        raise WireError("decode", f"{end - pos} bytes after the last entry")
    return Heartbeat(host, boot, seq, interval_ms / 1000.0, tuple(claims))
