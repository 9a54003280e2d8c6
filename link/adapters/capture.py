"""Hearing who else claims a VIP on the wire: ARP for IPv4, neighbour advertisements for IPv6.

One AF_PACKET socket per VIP (one per worker: hundreds on a host), so the kernel does the
sorting: a classic BPF program (SO_ATTACH_FILTER) keeps only the frames that say "the VIP is
at this MAC" — ARP whose sender protocol address is the VIP, ICMPv6 neighbour advertisements
whose target is the VIP — and drops the rest of the LAN's traffic before it is queued. The
socket is made with protocol 0 (it receives nothing), filtered, and only then bound to its
protocol, so no unfiltered frame is ever queued on it. `parse()` checks every frame again in
Python (the filter is the cheap first pass, the parser the one that names the claim).

Frames this host sends are left out twice: a socket bound to one protocol (not ETH_P_ALL) is
not given outgoing frames by the kernel, and `read()` drops PACKET_OUTGOING all the same.

`probe()` asks "who is at the VIP?" so that a claimant that says nothing is heard too: an ARP
probe (RFC 5227: sender address 0.0.0.0, which no neighbour cache learns from; the holder of
the address answers it with a unicast reply to us), or a neighbour solicitation for the VIP to
its solicited-node group, from this interface's link-local address when it has one (the answer
is a solicited NA unicast to us, which no client's cache takes as an override) and from `::`
otherwise (a DAD probe: answered to all nodes).
"""
from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1
ICMPV6 = 58
NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT = 135, 136
OPT_TARGET_LLADDR = 2
MAX_FRAMES_PER_READ = 256  # a flood is drained over several reads, the loop keeps turning
FRAME_BUFFER = 2048

KINDS = ("arp-reply", "arp-request", "arp-announce", "na")


@dataclass(frozen=True)
class Sighting:
    """A frame on the wire saying "this address is at this MAC"."""

    mac: str  # "aa:bb:cc:dd:ee:ff", lower case
    kind: str  # one of KINDS
    at: float  # time.monotonic() when read


# -- the kernel's filter ---------------------------------------------------------------------
# Classic BPF (linux/filter.h): 8-byte instructions {u16 code, u8 jt, u8 jf, u32 k}.
LD_B, LD_H, LD_W = 0x30, 0x28, 0x20  # BPF_LD | size | BPF_ABS
JEQ = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
RET = 0x06  # BPF_RET | BPF_K
ACCEPT = 0x40000  # return value: the bytes of the frame to keep (all of it)

Instruction = tuple[int, int, int, int]


def _program(checks: list[tuple[int, int, int]]) -> list[Instruction]:
    """Load-and-compare pairs, all of which must hold, then accept; any miss jumps to the drop.

    `checks`: (load opcode, offset, expected value)."""
    program: list[Instruction] = []
    for index, (load, offset, value) in enumerate(checks):
        left = len(checks) - index - 1  # compare pairs after this one
        program.append((load, 0, 0, offset))
        # On a miss skip the remaining pairs and the accept: land on the final drop.
        program.append((JEQ, 0, 2 * left + 1, value))
    program.append((RET, 0, 0, ACCEPT))
    program.append((RET, 0, 0, 0))
    return program


def filter_program(address: str) -> list[Instruction]:
    """The filter for a VIP's address (no prefix), frames seen from the Ethernet header on.

    The kernel runs it on every incoming frame of the socket's protocol on INTERFACE (every
    ARP frame for an IPv4 VIP, every IPv6 frame for an IPv6 VIP: the VIP's own traffic too), so
    the first pair is the one that rejects nearly everything: a frame that is not a claim costs
    3 instructions (load, compare, drop). For IPv6 that is the ICMPv6 type byte (136, NA):
    in a TCP or UDP frame the same byte is the high byte of the source port, which is 0x88 for
    ~1% of ports (then the next-header pair drops it: 5 instructions). For ARP it is the sender
    address (the VIP). The EtherType is checked last: the bound protocol already sorted it."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return _program([
            (LD_W, 28, int(ip)),  # sender protocol address
            (LD_H, 16, 0x0800),  # ARP protocol type: IPv4
            (LD_H, 12, ETH_P_ARP),  # EtherType
        ])
    words = struct.unpack("!4I", ip.packed)
    return _program([
        (LD_B, 54, NEIGHBOR_ADVERT),  # ICMPv6 type (an NA carries no extension header)
        (LD_B, 20, ICMPV6),  # next header
        (LD_H, 12, ETH_P_IPV6),
        *((LD_W, 62 + 4 * i, word) for i, word in enumerate(words)),  # the NA's target address
    ])


def attach_filter(sock: socket.socket, program: list[Instruction]) -> None:
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;} in native layout.
    fprog = struct.pack("HP", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


# -- the parser (the second check) -----------------------------------------------------------
def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def parse(frame: bytes, address: str, at: float) -> Sighting | None:
    """The claim a frame makes on `address`, or None if it makes none."""
    ip = ipaddress.ip_address(address)
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    if ip.version == 4:
        return _parse_arp(frame, ip.packed, at) if ethertype == ETH_P_ARP else None
    return _parse_na(frame, ip.packed, at) if ethertype == ETH_P_IPV6 else None


def _parse_arp(frame: bytes, vip: bytes, at: float) -> Sighting | None:
    if len(frame) < 42:
        return None
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (1, 2):
        return None
    sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
    if spa != vip or sha == b"\x00" * 6:
        return None
    if tpa == spa:
        kind = "arp-announce"  # gratuitous: either form (request or reply)
    else:
        kind = "arp-request" if op == 1 else "arp-reply"
    return Sighting(_mac(sha), kind, at)


def _parse_na(frame: bytes, vip: bytes, at: float) -> Sighting | None:
    # Ethernet (14) + IPv6 (40) + NA (24: type, code, checksum, flags, target) at least.
    if len(frame) < 78 or frame[14] >> 4 != 6 or frame[20] != ICMPV6:
        return None
    if frame[21] != 255 or frame[54] != NEIGHBOR_ADVERT or frame[55] != 0:
        return None  # RFC 4861 7.1.2: a hop limit below 255 came through a router, not the link
    if frame[62:78] != vip:
        return None
    payload = struct.unpack_from("!H", frame, 18)[0]
    end = min(len(frame), 54 + payload)
    mac = frame[6:12]  # without the option, the sender's Ethernet address
    offset = 78
    while offset + 8 <= end:
        kind, units = frame[offset], frame[offset + 1]
        if units == 0:
            return None  # malformed option: RFC 4861 says drop the packet
        if kind == OPT_TARGET_LLADDR and units == 1:
            mac = frame[offset + 2:offset + 8]
            break
        offset += 8 * units
    return Sighting(_mac(mac), "na", at)


# -- the probes ------------------------------------------------------------------------------
def probe_frame(address: str, mac: str, source: str | None = None) -> bytes:
    """"Who is at `address`?" from `mac`: an RFC 5227 ARP probe, or a neighbour solicitation
    from `source` (a link-local address of ours; None: from `::`, a DAD probe)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        from scapy.layers.l2 import ARP, Ether

        return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac)
                     / ARP(op=1, hwsrc=mac, psrc="0.0.0.0", hwdst="00:00:00:00:00:00", pdst=str(ip)))
    from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
    from scapy.layers.l2 import Ether

    group = ipaddress.ip_address("ff02::1:ff00:0") + (int(ip) & 0xFFFFFF)
    group_mac = "33:33:" + ":".join(f"{b:02x}" for b in group.packed[-4:])
    ns = IPv6(src=source or "::", dst=str(group), hlim=255) / ICMPv6ND_NS(tgt=str(ip))
    if source:  # RFC 4861: no source link-layer option when the source is unspecified
        ns = ns / ICMPv6NDOptSrcLLAddr(lladdr=mac)
    return bytes(Ether(dst=group_mac, src=mac) / ns)


def link_local_of(ifname: str, inet6: str = "/proc/net/if_inet6") -> str | None:
    """A non-tentative link-local address of `ifname` (this process's namespace), or None."""
    try:
        with open(inet6, encoding="ascii") as lines:
            for line in lines:
                fields = line.split()
                if len(fields) < 6 or fields[5] != ifname or fields[3] != "20":  # scope 0x20: link
                    continue
                if int(fields[4], 16) & 0x40:  # IFA_F_TENTATIVE: not usable as a source yet
                    continue
                return str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
    except (OSError, ValueError):
        return None
    return None


def interface_mac(ifname: str) -> str | None:
    """The Ethernet address of `ifname` in this process's namespace (SIOCGIFHWADDR), or None."""
    request = struct.pack("256s", ifname.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, request)
        except OSError:
            return None
    if struct.unpack_from("H", answer, 16)[0] != ARPHRD_ETHER:
        return None
    return _mac(answer[18:24])


def host_macs() -> set[str]:
    """The Ethernet addresses of every interface of this host (this process's namespace): with
    two interfaces on one LAN the kernel may answer ARP for the VIP from the other one, which
    is this host still, not another claimant."""
    found = set()
    for _, name in socket.if_nameindex():
        mac = interface_mac(name)
        if mac is not None and mac != "00:00:00:00:00:00":
            found.add(mac)
    return found


class ClaimCapture:
    """The frames claiming `address` on `interface`, read without blocking."""

    def __init__(self, interface: str, address: str, clock: Callable[[], float] = time.monotonic) -> None:
        ip = ipaddress.ip_address(address.split("/")[0])
        self.interface = interface
        self.address = ip.compressed
        self.clock = clock
        self.protocol = ETH_P_ARP if ip.version == 4 else ETH_P_IPV6
        # Protocol 0 until the filter is on: nothing is queued unfiltered (see the docstring).
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(self._sock, filter_program(self.address))
            self._sock.bind((interface, self.protocol))
            self._sock.setblocking(False)
            self.mac = _mac(self._sock.getsockname()[4][:6])
        except BaseException:
            self._sock.close()
            raise
        self._probe: bytes | None = None
        self._probe_source: str | None = None
        self.probes = 0  # probe frames sent

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> list[Sighting]:
        """What was queued since the last read (at most MAX_FRAMES_PER_READ frames)."""
        found: list[Sighting] = []
        for _ in range(MAX_FRAMES_PER_READ):
            try:
                frame, where = self._sock.recvfrom(FRAME_BUFFER)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # the interface went down, say: the next read tries again
                logger.debug("%s: reading claims on %s failed: %s", self.address, self.interface, exc)
                break
            if where[2] == PACKET_OUTGOING:
                continue
            sighting = parse(frame, self.address, self.clock())
            if sighting is not None:
                found.append(sighting)
        return found

    def probe(self) -> None:
        """Ask who is at the address; the answers come back through read()."""
        if self._probe is None or (self.protocol == ETH_P_IPV6 and self._probe_source is None):
            # An IPv6 probe from `::` until the link-local address is there (its DAD done).
            self._probe_source = link_local_of(self.interface) if self.protocol == ETH_P_IPV6 else None
            self._probe = probe_frame(self.address, self.mac, self._probe_source)
        try:
            self._sock.send(self._probe)
            self.probes += 1
        except OSError as exc:
            logger.debug("%s: probe on %s failed: %s", self.address, self.interface, exc)

    def close(self) -> None:
        self._sock.close()
