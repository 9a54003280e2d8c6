"""What a worker counts: its own counters, the etcd adapter's call statistics, the frames it
announces a VIP with (IPv6 neighbour advertisements checked byte by byte, without scapy)."""
from __future__ import annotations

import ipaddress
import struct

import grpc
import pytest
from etcd3 import etcdrpc

from link.checks import CheckResult
from link.config import EtcdEndpoint
from link.adapters.announce import announcement_frames
from link.etcd.grpc_client import GrpcEtcd
from link.etcd.port import EtcdUnavailable
from link.worker.metrics import WorkerMetrics
from tests.unit.fake_clock import Clock

MAC = "02:00:00:00:01:01"


def test_counters_and_snapshot() -> None:
    clock = Clock(10.0)
    metrics = WorkerMetrics(clock=clock, interval=2.0)
    metrics.transition("elected")
    metrics.transition("elected")
    metrics.transition(None)
    metrics.health_round([CheckResult(True, "TCP 198.51.100.20:5432: connected", 0.01),
                          CheckResult(False, "TCP 198.51.100.21:5432: refused", 0.02)])
    snap = metrics.snapshot({"lease_renewals": 4}, packets=6)
    assert snap["transitions"] == {"elected": 2, "none": 1}
    assert snap["announce_packets"] == 6 and snap["etcd"] == {"lease_renewals": 4}
    assert snap["health"]["results"] == {"pass": 1, "fail": 1} and snap["health"]["count"] == 2
    assert snap["health"]["seconds"] == pytest.approx(0.03)
    # The snapshot is a copy: later counting does not change what was sent.
    metrics.transition("demoted")
    assert "demoted" not in snap["transitions"]


def test_a_metrics_message_at_most_every_interval() -> None:
    clock = Clock(10.0)
    metrics = WorkerMetrics(clock=clock, interval=2.0)
    assert not metrics.due()
    clock.now += 2.0
    assert metrics.due() and not metrics.due()
    clock.now += 1.5
    metrics.snapshot(None, 0)  # a state report carried the numbers: the timer starts again
    clock.now += 1.0
    assert not metrics.due()
    clock.now += 1.0
    assert metrics.due()


class FakeRpcError(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection refused"


def test_etcd_calls_are_counted_timed_and_their_errors_sorted() -> None:
    # A channel to a closed lab port is never used: the stub methods are replaced by fakes.
    etcd = GrpcEtcd([EtcdEndpoint("198.51.100.1", 1, False)], deadline=0.2)
    try:
        def answer(request: object, timeout: float) -> object:
            return etcdrpc.RangeResponse()

        def fail(request: object, timeout: float) -> object:
            raise FakeRpcError()

        etcd._call(answer, etcdrpc.RangeRequest(key=b"/x"))
        etcd._call(answer, etcdrpc.RangeRequest(key=b"/y"))
        with pytest.raises(EtcdUnavailable):
            etcd._call(fail, etcdrpc.TxnRequest())
        snap = etcd.stats.snapshot()
        assert snap["requests"] == {"Range": 2, "Txn": 1}
        assert snap["seconds"]["Range"] >= 0 and set(snap["seconds"]) == {"Range", "Txn"}
        assert snap["errors"] == {"Txn": {"unavailable": 1}}
    finally:
        etcd.close()


def _mac(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


def _icmpv6_checksum(src: bytes, dst: bytes, payload: bytes) -> int:
    pseudo = src + dst + struct.pack("!I3xB", len(payload), 58) + payload
    if len(pseudo) % 2:
        pseudo += b"\0"
    total = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total ^ 0xFFFF


def test_an_ipv6_vip_is_announced_by_an_unsolicited_neighbour_advertisement() -> None:
    (frame,) = announcement_frames("2001:db8::50/128", MAC)
    vip = ipaddress.IPv6Address("2001:db8::50").packed
    all_nodes = ipaddress.IPv6Address("ff02::1").packed
    # Ethernet: to the all-nodes multicast MAC, from ours, IPv6.
    assert frame[0:6] == _mac("33:33:00:00:00:01") and frame[6:12] == _mac(MAC) and frame[12:14] == b"\x86\xdd"
    ip6 = frame[14:54]
    assert ip6[0] >> 4 == 6 and ip6[6] == 58 and ip6[7] == 255  # ICMPv6, hop limit 255 (RFC 4861 §7.1.2)
    assert ip6[8:24] == vip and ip6[24:40] == all_nodes
    icmp = frame[54:]
    assert struct.unpack("!H", ip6[4:6])[0] == len(icmp) == 32
    assert icmp[0] == 136 and icmp[1] == 0  # neighbour advertisement
    flags = icmp[4]
    assert flags & 0x80 == 0 and flags & 0x40 == 0 and flags & 0x20  # not a router, unsolicited, override
    assert icmp[8:24] == vip  # the target is the VIP
    assert icmp[24:26] == b"\x02\x01" and icmp[26:32] == _mac(MAC)  # target link-layer address option
    assert _icmpv6_checksum(vip, all_nodes, icmp[:2] + b"\0\0" + icmp[4:]) == struct.unpack("!H", icmp[2:4])[0]


def test_an_ipv4_vip_is_announced_by_an_arp_request_and_reply() -> None:
    request, reply = announcement_frames("198.51.100.50/32", MAC)
    vip = ipaddress.IPv4Address("198.51.100.50").packed
    for frame, op in ((request, 1), (reply, 2)):
        assert frame[0:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
        assert struct.unpack("!H", frame[20:22])[0] == op
        assert frame[22:28] == _mac(MAC) and frame[28:32] == vip and frame[38:42] == vip
    assert reply[32:38] == _mac(MAC)
