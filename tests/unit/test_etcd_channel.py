"""When the etcd adapter gives up on its gRPC channel (link/worker/etcd_grpc.py): the next
member at once, then only a channel that keeps failing and is old enough, so that slow
connection attempts are not killed one after the other; and what a failure is called."""
from __future__ import annotations

import time

import grpc
import pytest
from etcd3 import etcdrpc

from link.config import EtcdEndpoint
from link.worker.etcd_grpc import GrpcEtcd, translate
from link.worker.etcd_port import EtcdUnavailable

DEADLINE = 0.2


class Unavailable(grpc.RpcError):
    def __init__(self, details: str = "failed to connect to all addresses") -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def fail(request: object, timeout: float) -> object:
    raise Unavailable()


def answer(request: object, timeout: float) -> object:
    return etcdrpc.RangeResponse()


@pytest.fixture
def adapter(request):
    # Channels to closed lab ports are never used: the calls are the fakes above.
    members = [EtcdEndpoint("198.51.100.1", port, False) for port in range(1, request.param + 1)]
    etcd = GrpcEtcd(members, deadline=DEADLINE)
    yield etcd
    etcd.close()


def call(etcd: GrpcEtcd, method) -> None:
    try:
        etcd._call(method, etcdrpc.RangeRequest(key=b"/k"))
    except EtcdUnavailable:
        pass


def age(etcd: GrpcEtcd, seconds: float) -> None:
    etcd._opened = time.monotonic() - seconds


@pytest.mark.parametrize("adapter", [1], indirect=True)
def test_a_single_member_keeps_its_channel_while_a_connection_may_just_be_slow(adapter):
    first = adapter._channel
    call(adapter, fail)
    assert adapter._channel is first  # one failure: maybe a slow connect, keep waiting
    call(adapter, fail)
    assert adapter._channel is first  # two, but the channel is younger than two deadlines
    age(adapter, 2 * DEADLINE)
    call(adapter, fail)
    second = adapter._channel
    assert second is not first  # failing and old enough: a fresh channel (grpc 1.51 needs it)

    call(adapter, fail)
    age(adapter, 3 * DEADLINE)
    call(adapter, fail)
    assert adapter._channel is second  # the next one is given twice as long
    age(adapter, 4 * DEADLINE)
    call(adapter, fail)
    third = adapter._channel
    assert third is not second

    call(adapter, answer)  # a success: the patience starts again from two deadlines
    call(adapter, fail)
    call(adapter, fail)
    age(adapter, 2 * DEADLINE)
    call(adapter, fail)
    assert adapter._channel is not third


@pytest.mark.parametrize("adapter", [1], indirect=True)
def test_the_patience_is_capped_at_six_deadlines(adapter):
    for _ in range(6):  # many useless replacements in a row
        call(adapter, fail)
        age(adapter, 100 * DEADLINE)
        call(adapter, fail)
    before = adapter._channel
    call(adapter, fail)
    age(adapter, 6 * DEADLINE)
    call(adapter, fail)
    assert adapter._channel is not before


@pytest.mark.parametrize("adapter", [3], indirect=True)
def test_with_three_members_each_other_member_is_tried_at_once(adapter):
    ports = []
    for _ in range(2):
        call(adapter, fail)
        ports.append(adapter._endpoints[adapter._index].port)
    assert ports == [2, 3]
    before = adapter._channel
    call(adapter, fail)
    assert adapter._channel is before  # all tried: now the same patience as with one member


def test_a_plain_connection_is_never_blamed_on_tls():
    error = translate(Unavailable("failed to connect; last error: UNKNOWN: tcp handshaker shutdown"), tls=False)
    assert isinstance(error, EtcdUnavailable) and "TLS" not in str(error)


def test_a_certificate_failure_over_tls_says_what_to_check():
    error = translate(Unavailable("Ssl handshake failed: SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED"), tls=True)
    assert isinstance(error, EtcdUnavailable)
    assert "TLS handshake with etcd failed" in str(error) and "ETCD_CACERT" in str(error)
