"""A tcpdump capture in a namespace, and the ARP frames or IPv6 neighbour advertisements it
saw (a tiny pcap reader)."""
from __future__ import annotations

import ipaddress
import os
import signal
import struct
import subprocess
import time
from dataclasses import dataclass

from .waiting import GiveUp, wait_until


@dataclass(frozen=True)
class Arp:
    time: float
    op: int            # 1 request, 2 reply
    src_mac: str       # Ethernet source
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str

    def is_gratuitous_request(self, ip: str) -> bool:
        return self.op == 1 and self.sender_ip == ip and self.target_ip == ip

    def is_gratuitous_reply(self, ip: str) -> bool:
        return self.op == 2 and self.sender_ip == ip and self.target_mac == self.sender_mac

    def is_announcement(self, ip: str) -> bool:
        return self.is_gratuitous_request(ip) or self.is_gratuitous_reply(ip)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ip4(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


@dataclass(frozen=True)
class NeighbourAdvert:
    """An ICMPv6 neighbour advertisement (RFC 4861 §4.4) as seen on the wire."""
    time: float
    src_mac: str       # Ethernet source
    dst_mac: str       # Ethernet destination
    src_ip: str
    dst_ip: str
    hop_limit: int
    router: bool
    solicited: bool
    override: bool
    target: str
    target_mac: str | None  # the target link-layer address option, if any

    def is_unsolicited_announcement(self, ip: str) -> bool:
        return self.target == ip and not self.solicited and self.override and self.dst_ip == "ff02::1"


def _frames(path: str) -> list[tuple[float, bytes]]:
    """(time, frame) of each whole frame of a pcap file (Ethernet link type, written with
    tcpdump -U). A frame cut short at the end of a file still being written is ignored."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path} is not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet (1)")
    frames: list[tuple[float, bytes]] = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        if len(frame) < incl:
            break
        pos += 16 + incl
        frames.append((sec + frac / (1e9 if nano else 1e6), frame))
    return frames


def read_na(path: str) -> list[NeighbourAdvert]:
    """The neighbour advertisements of a pcap file (IPv6 without extension headers)."""
    out: list[NeighbourAdvert] = []
    for when, frame in _frames(path):
        if len(frame) < 14 + 40 + 24 or frame[12:14] != b"\x86\xdd" or frame[20] != 58:
            continue
        ip6, icmp = frame[14:54], frame[54:]
        if icmp[0] != 136:
            continue
        flags, lladdr = icmp[4], None
        options = icmp[24:]
        while len(options) >= 8 and options[1]:
            if options[0] == 2 and options[1] == 1:  # target link-layer address
                lladdr = _mac(options[2:8])
            options = options[8 * options[1]:]
        out.append(NeighbourAdvert(
            time=when, src_mac=_mac(frame[6:12]), dst_mac=_mac(frame[0:6]),
            src_ip=str(ipaddress.IPv6Address(ip6[8:24])), dst_ip=str(ipaddress.IPv6Address(ip6[24:40])),
            hop_limit=ip6[7], router=bool(flags & 0x80), solicited=bool(flags & 0x40), override=bool(flags & 0x20),
            target=str(ipaddress.IPv6Address(icmp[8:24])), target_mac=lladdr,
        ))
    return out


def read_arp(path: str) -> list[Arp]:
    """ARP frames of a pcap file (Ethernet link type, written with tcpdump -U)."""
    out: list[Arp] = []
    for when, frame in _frames(path):
        if len(frame) < 42 or frame[12:14] != b"\x08\x06":
            continue
        htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
        if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
            continue
        arp = frame[22:42]
        out.append(Arp(
            time=when, op=op, src_mac=_mac(frame[6:12]),
            sender_mac=_mac(arp[0:6]), sender_ip=_ip4(arp[6:10]),
            target_mac=_mac(arp[10:16]), target_ip=_ip4(arp[16:20]),
        ))
    return out


class Capture:
    """`tcpdump -i <iface> -w <file> <bpf>` (ARP by default) inside a namespace, stopped by PID."""

    def __init__(self, ns: str, iface: str, path: str, log_path: str, bpf: str = "arp") -> None:
        self.ns, self.iface, self.path, self.log_path, self.bpf = ns, iface, path, log_path, bpf
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 5.0) -> "Capture":
        log = open(self.log_path, "wb")
        try:
            # -Z root: Debian's tcpdump otherwise drops to user tcpdump and cannot write here.
            # --immediate-mode and -U: each frame is in the file at once (without them libpcap
            # hands frames over in blocks, up to a second late, and "no announcement for 0.6 s"
            # would be a lie).
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "tcpdump", "-Z", "root", "-n", "-U", "--immediate-mode", "-s", "128",
                 "-i", self.iface, "-w", self.path, self.bpf],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        finally:
            log.close()

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GiveUp(f"tcpdump exited with {self.proc.returncode}: {self.log()}")
            return "listening on" in self.log()

        try:
            wait_until(listening, timeout, 0.02, "tcpdump to listen")
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def packets(self) -> list[Arp]:
        return read_arp(self.path)

    def adverts(self) -> list[NeighbourAdvert]:
        return read_na(self.path)

    def announcements(self, ip: str, mac: str | None = None) -> list[Arp]:
        return [p for p in self.packets() if p.is_announcement(ip) and (mac is None or p.src_mac == mac)]

    def stop(self, timeout: float = 5.0) -> list[Arp]:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        return self.packets()

    def __enter__(self) -> "Capture":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def quiet_for(capture: Capture, ip: str, quiet: float, timeout: float) -> list[Arp]:
    """Wait until no announcement for `ip` was seen for `quiet` seconds (by the pcap clock
    against wall time) and return the announcements."""
    def settled() -> list[Arp] | None:
        seen = capture.announcements(ip)
        if seen and time.time() - seen[-1].time >= quiet:
            return seen
        return None
    return wait_until(settled, timeout, 0.05, f"announcements of {ip} to stop for {quiet}s")
