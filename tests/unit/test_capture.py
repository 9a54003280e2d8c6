"""The claim capture's two checks on faked frames: the classic BPF program the kernel runs
(executed here by a small interpreter of the instructions it uses) and the Python parser; the
probes' bytes. Real sockets and packets: tests/integration/test_wire_claims.py."""
from __future__ import annotations

import ipaddress
import pathlib
import socket
import struct

import pytest

from link.adapters import capture
from link.adapters.announce import announcement_frames
from link.adapters.capture import Sighting, attach_filter, filter_program, link_local_of, parse, probe_frame

VIP4, VIP6 = "198.51.100.50", "2001:db8::50"
OURS, ROGUE = "02:00:00:00:01:01", "02:00:00:00:0e:0e"
BROADCAST = b"\xff" * 6


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def run_bpf(program: list[tuple[int, int, int, int]], frame: bytes) -> int:
    """What the kernel's classic BPF returns for `frame` (only the opcodes the capture uses);
    a load beyond the frame ends the program with 0, as in the kernel."""
    return trace_bpf(program, frame)[0]


def trace_bpf(program: list[tuple[int, int, int, int]], frame: bytes) -> tuple[int, int]:
    """run_bpf's result and the number of instructions it executed."""
    sizes = {capture.LD_B: 1, capture.LD_H: 2, capture.LD_W: 4}
    acc, pc = 0, 0
    for step in range(1, len(program) + 2):
        code, jt, jf, k = program[pc]
        if code in sizes:
            if k + sizes[code] > len(frame):
                return 0, step
            acc = int.from_bytes(frame[k:k + sizes[code]], "big")
            pc += 1
        elif code == capture.JEQ:
            pc += 1 + (jt if acc == k else jf)
        elif code == capture.RET:
            return k, step
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")
    raise AssertionError("the program ran off its end")


def arp(op: int, sha: str, spa: str, tpa: str, tha: str = "00:00:00:00:00:00", src: str | None = None) -> bytes:
    return (BROADCAST + mac(src or sha) + struct.pack("!H", 0x0806)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac(sha) + ipaddress.ip_address(spa).packed
            + mac(tha) + ipaddress.ip_address(tpa).packed + b"\x00" * 18)  # padded to 60 bytes


def na(target: str, lladdr: str | None, src_mac: str = ROGUE, hlim: int = 255, icmp_type: int = 136) -> bytes:
    option = bytes([2, 1]) + mac(lladdr) if lladdr else b""
    body = bytes([icmp_type, 0, 0, 0]) + struct.pack("!I", 0x20000000) + ipaddress.ip_address(target).packed + option
    header = struct.pack("!IHBB", 0x60000000, len(body), 58, hlim) + ipaddress.ip_address("fe80::e").packed \
        + ipaddress.ip_address("ff02::1").packed
    return b"\x33\x33\x00\x00\x00\x01" + mac(src_mac) + struct.pack("!H", 0x86DD) + header + body


def both(frame: bytes, address: str) -> tuple[bool, Sighting | None]:
    return run_bpf(filter_program(address), frame) != 0, parse(frame, address, at=7.0)


# -- IPv4 --------------------------------------------------------------------------------------
def test_a_gratuitous_arp_for_the_vip_passes_both_checks_in_either_form() -> None:
    request, reply = announcement_frames(f"{VIP4}/32", ROGUE)  # what a link agent sends
    for frame in (request, reply):
        assert both(frame, VIP4) == (True, Sighting(ROGUE, "arp-announce", 7.0))


def test_arp_from_the_vip_is_a_claim_whatever_it_asks() -> None:
    assert both(arp(1, ROGUE, VIP4, "198.51.100.1"), VIP4) == (True, Sighting(ROGUE, "arp-request", 7.0))
    # The answer to our RFC 5227 probe: a reply to us, target address 0.0.0.0.
    assert both(arp(2, ROGUE, VIP4, "0.0.0.0", tha=OURS), VIP4) == (True, Sighting(ROGUE, "arp-reply", 7.0))


def test_the_arp_sender_hardware_address_names_the_claimant_not_the_ethernet_source() -> None:
    assert both(arp(2, ROGUE, VIP4, "198.51.100.1", src="02:00:00:00:0f:0f"), VIP4)[1] == Sighting(ROGUE, "arp-reply", 7.0)


@pytest.mark.parametrize("frame", [
    arp(1, ROGUE, "198.51.100.51", VIP4),  # someone asking for the VIP claims nothing
    arp(1, ROGUE, "0.0.0.0", VIP4),  # another host's probe (RFC 5227) claims nothing
    arp(2, ROGUE, "198.51.100.51", "198.51.100.51"),  # another address's announcement
])
def test_arp_that_does_not_claim_the_vip_is_dropped_by_both(frame: bytes) -> None:
    assert both(frame, VIP4) == (False, None)


def ipv6_tcp(source_port: int, payload: bytes = b"\x00" * 20) -> bytes:
    """An IPv6 TCP segment (the VIP's own traffic, say) as the socket of an IPv6 VIP sees it."""
    tcp = struct.pack("!HH", source_port, 443) + b"\x00" * 16 + payload
    header = struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + ipaddress.ip_address(VIP6).packed \
        + ipaddress.ip_address("2001:db8::c").packed
    return mac(OURS) + mac(ROGUE) + struct.pack("!H", 0x86DD) + header + tcp


@pytest.mark.parametrize(("frame", "address", "steps"), [
    (ipv6_tcp(40000), VIP6, 3),  # most IPv6 traffic: the type byte is not 136
    (ipv6_tcp(0x88AA), VIP6, 5),  # a source port whose high byte is 136: the next header drops it
    (na("2001:db8::99", ROGUE), VIP6, 2 * 7 + 1),  # an NA for another address: the last target word drops it
    (arp(1, ROGUE, "198.51.100.7", "198.51.100.1"), VIP4, 3),  # ARP of any other host
], ids=["ipv6-tcp", "ipv6-tcp-port-0x88xx", "na-other-target", "arp-other-sender"])
def test_the_filter_drops_what_is_no_claim_in_few_instructions(frame: bytes, address: str, steps: int) -> None:
    # The kernel runs the filter on every IPv6 (ARP) frame per IPv6 (IPv4) VIP held: what is
    # not a claim is dropped by the first pair in most cases.
    assert trace_bpf(filter_program(address), frame) == (0, steps)


def test_the_parser_refuses_what_the_filter_lets_through_malformed() -> None:
    frame = bytearray(arp(2, ROGUE, VIP4, "198.51.100.1"))
    frame[18] = 8  # hardware address length 8: not Ethernet ARP
    assert both(bytes(frame), VIP4) == (True, None)
    zero = arp(2, "00:00:00:00:00:00", VIP4, "198.51.100.1")
    assert both(zero, VIP4) == (True, None)
    assert both(arp(2, ROGUE, VIP4, "198.51.100.1")[:30], VIP4) == (False, None)  # truncated


def test_ipv6_frames_are_no_claim_on_an_ipv4_vip() -> None:
    assert both(na(VIP6, ROGUE), VIP4) == (False, None)


# -- IPv6 --------------------------------------------------------------------------------------
def test_a_neighbour_advertisement_for_the_vip_passes_both_checks() -> None:
    assert both(na(VIP6, ROGUE), VIP6) == (True, Sighting(ROGUE, "na", 7.0))
    (ours,) = announcement_frames(f"{VIP6}/128", OURS)
    assert both(ours, VIP6) == (True, Sighting(OURS, "na", 7.0))


def test_without_a_target_link_layer_option_the_ethernet_source_names_the_claimant() -> None:
    assert both(na(VIP6, None, src_mac=ROGUE), VIP6) == (True, Sighting(ROGUE, "na", 7.0))


@pytest.mark.parametrize("frame", [
    na("2001:db8::51", ROGUE),  # another address
    na(VIP6, ROGUE, icmp_type=135),  # a solicitation: it asks, it claims nothing
    arp(2, ROGUE, VIP4, VIP4),
])
def test_frames_that_do_not_advertise_the_vip_are_dropped_by_both(frame: bytes) -> None:
    assert both(frame, VIP6) == (False, None)


def test_an_advertisement_that_crossed_a_router_is_refused_by_the_parser() -> None:
    assert both(na(VIP6, ROGUE, hlim=64), VIP6) == (True, None)


def test_an_option_of_length_zero_makes_the_advertisement_malformed() -> None:
    frame = na(VIP6, None) + bytes([1, 0, 0, 0, 0, 0, 0, 0])
    frame = frame[:18] + struct.pack("!H", 32) + frame[20:]
    assert both(frame, VIP6) == (True, None)


# -- probes ------------------------------------------------------------------------------------
def test_the_arp_probe_is_rfc_5227s_and_claims_nothing() -> None:
    frame = probe_frame(VIP4, OURS)
    assert frame[:6] == BROADCAST and frame[6:12] == mac(OURS)
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
    assert (op, frame[22:28], frame[28:32], frame[32:38]) == (1, mac(OURS), bytes(4), bytes(6))
    assert frame[38:42] == ipaddress.ip_address(VIP4).packed
    assert both(frame, VIP4) == (False, None)  # our own probe is no claim


@pytest.mark.parametrize("source", ["fe80::1", None])
def test_the_neighbour_solicitation_goes_to_the_vips_solicited_node_group(source: str | None) -> None:
    frame = probe_frame(VIP6, OURS, source)
    assert frame[:6] == bytes.fromhex("3333ff000050") and frame[6:12] == mac(OURS)
    assert frame[20] == 58 and frame[21] == 255 and frame[54] == 135
    assert frame[38:54] == ipaddress.ip_address("ff02::1:ff00:50").packed
    assert frame[62:78] == ipaddress.ip_address(VIP6).packed
    assert frame[22:38] == ipaddress.ip_address(source or "::").packed
    # The source link-layer option only with a source address (RFC 4861 7.2.2).
    assert frame[78:86] == (bytes([1, 1]) + mac(OURS) if source else b"")
    assert both(frame, VIP6) == (False, None)


def test_the_link_local_source_is_read_from_proc_and_a_tentative_one_is_skipped(tmp_path: pathlib.Path) -> None:
    table = tmp_path / "if_inet6"
    table.write_text("20010db8000000000000000000000050 02 80 00 80     eth0\n"
                     "fe800000000000000000000000000001 02 40 20 c0     eth0\n"  # tentative
                     "fe800000000000000000000000000002 03 40 20 80     eth1\n"
                     "fe800000000000000000000000000003 02 40 20 80     eth0\n")
    assert link_local_of("eth0", str(table)) == "fe80::3"
    assert link_local_of("eth2", str(table)) is None
    assert link_local_of("eth0", str(tmp_path / "missing")) is None


# -- the kernel accepts the programs -----------------------------------------------------------
@pytest.mark.parametrize("address", [VIP4, VIP6])
def test_the_kernel_accepts_the_filter(address: str) -> None:
    # Protocol 0 and never bound: this socket receives nothing from any interface.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        attach_filter(sock, filter_program(address))
        with pytest.raises(OSError):  # and refuses a broken one (a jump beyond the end)
            attach_filter(sock, [(capture.JEQ, 0, 9, 0), (capture.RET, 0, 0, 0)])
    finally:
        sock.close()
