"""When the etcd adapter gives up on its gRPC channel (link/etcd/grpc_client.py): at once after
a call that failed at once; after a call that ran into its deadline, the next member at once,
then only a channel that keeps failing and is old enough, so that slow connection attempts
are not cut short one after the other. And what a failure is called."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from etcd3 import etcdrpc

from link.config import EtcdEndpoint
from link.etcd.grpc_client import WATCH_RETRY_MAX, WATCH_RETRY_MIN, GrpcEtcd
from link.etcd.grpc_errors import translate
from link.etcd.port import EtcdUnavailable
from tests.lab import wait_until
from tests.unit.fake_clock import Clock

DEADLINE = 0.2


class Unavailable(grpc.RpcError):
    def __init__(self, details: str = "failed to connect to all addresses") -> None:
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


@pytest.fixture
def adapter(request):
    # Channels to closed lab ports are never used: the calls below are fakes.
    members = [EtcdEndpoint("198.51.100.1", port, False) for port in range(1, request.param + 1)]
    clock = Clock()
    etcd = GrpcEtcd(members, deadline=DEADLINE, clock=clock)
    yield etcd, clock
    etcd.close()


def call(etcd: GrpcEtcd, clock: Clock, takes: float = DEADLINE, ok: bool = False) -> None:
    """One etcd call that takes `takes` seconds and fails as unavailable (or succeeds)."""
    def method(request: object, timeout: float) -> object:
        clock.now += takes
        if ok:
            return etcdrpc.RangeResponse()
        raise Unavailable()

    try:
        etcd._call(method, etcdrpc.RangeRequest(key=b"/k"))
    except EtcdUnavailable:
        pass


@pytest.mark.parametrize("adapter", [1], indirect=True)
def test_a_call_refused_at_once_gets_a_fresh_channel_at_once(adapter):
    etcd, clock = adapter
    channels = [etcd._channel]
    for _ in range(3):
        call(etcd, clock, takes=0.01)
        channels.append(etcd._channel)
    assert len({id(c) for c in channels}) == 4


@pytest.mark.parametrize("adapter", [1], indirect=True)
def test_a_single_member_keeps_its_channel_while_a_connection_may_just_be_slow(adapter):
    etcd, clock = adapter
    first = etcd._channel
    call(etcd, clock)
    assert etcd._channel is first  # one timeout: maybe a slow connect, keep waiting
    call(etcd, clock)
    second = etcd._channel
    assert second is not first  # two, and the channel is two deadlines old: a fresh one

    call(etcd, clock)
    call(etcd, clock)
    assert etcd._channel is second  # the next one is given twice as long (4 deadlines)
    call(etcd, clock)
    call(etcd, clock)
    third = etcd._channel
    assert third is not second

    call(etcd, clock, ok=True)  # a success: the patience starts again from two deadlines
    call(etcd, clock)
    call(etcd, clock)
    assert etcd._channel is not third


@pytest.mark.parametrize("adapter", [1], indirect=True)
def test_the_patience_is_capped_at_six_deadlines(adapter):
    etcd, clock = adapter
    for _ in range(6):  # many useless replacements in a row
        call(etcd, clock)
        clock.now += 100 * DEADLINE
        call(etcd, clock)
    before = etcd._channel
    for _ in range(5):
        call(etcd, clock)
    assert etcd._channel is before
    call(etcd, clock)  # six deadlines old
    assert etcd._channel is not before


@pytest.mark.parametrize("adapter", [3], indirect=True)
def test_with_three_members_each_other_member_is_tried_at_once(adapter):
    etcd, clock = adapter
    ports = []
    for _ in range(2):
        call(etcd, clock)
        ports.append(etcd._endpoints[etcd._index].port)
    assert ports == [2, 3]
    before = etcd._channel
    call(etcd, clock)
    assert etcd._channel is before  # all tried: now the same patience as with one member


def test_a_plain_connection_is_never_blamed_on_tls():
    error = translate(Unavailable("failed to connect; last error: UNKNOWN: tcp handshaker shutdown"), tls=False)
    assert isinstance(error, EtcdUnavailable) and "TLS" not in str(error)


def test_a_certificate_failure_over_tls_says_what_to_check():
    error = translate(Unavailable("Ssl handshake failed: SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED"), tls=True)
    assert isinstance(error, EtcdUnavailable)
    assert "TLS handshake with etcd failed" in str(error) and "ETCD_CACERT" in str(error)


def test_a_watch_that_cannot_come_up_does_not_wake_the_worker_for_each_retry():
    # etcd down (a closed port on loopback): the stream never comes up. Each retry used to
    # call the callback, so the worker ran an extra cycle every 0.5 s; now only a stream
    # that was up and broke does, and the pause between retries doubles up to 2 s.
    woken = threading.Event()
    attempts: list[float] = []
    etcd = GrpcEtcd([EtcdEndpoint("127.0.0.1", 1, False)], deadline=DEADLINE)
    real_watch = etcd._watcher.Watch

    def counting_watch(requests, *args, **kwargs):
        attempts.append(time.monotonic())
        return real_watch(requests, *args, **kwargs)

    etcd._watcher.Watch = counting_watch
    try:
        etcd.watch("/link/default/198.51.100.50_32", woken.set)
        wait_until(lambda: len(attempts) >= 3, 10, 0.05, what="three attempts of the watch")
        assert not woken.is_set()
        assert not etcd.watch_healthy
        # Pauses of 1 s then 2 s after failed attempts (0.5 s each before the change).
        first, second = attempts[1] - attempts[0], attempts[2] - attempts[1]
        assert first >= WATCH_RETRY_MIN * 2 - 0.05 and second >= WATCH_RETRY_MAX - 0.05, attempts
    finally:
        etcd.close()
