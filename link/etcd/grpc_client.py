"""The real etcd v3 adapter: etcd3's generated gRPC stubs, a deadline on every call.

We use the stubs rather than etcd3's client methods because we need a transaction compare on
a key's lease (absent from etcd3's helpers), our own deadlines, fast reconnects and a watch
that does not print tracebacks when it is cancelled. It works with PyPI's etcd3 0.12 and
Debian 12's python3-etcd3. Create it only in the worker, after the fork.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import grpc
from etcd3 import etcdrpc

from link.config import Config, EtcdEndpoint
from link.etcd.call_stats import CallStats
from link.etcd.grpc_errors import translate
from link.etcd.keepalive import KeepAliveStream
from link.etcd.port import EtcdError, EtcdUnavailable, KeyInfo, LeaseNotFound

logger = logging.getLogger(__name__)

# A broken watch is made again after WATCH_RETRY_MIN, then twice as long after each attempt
# that did not come up, up to the MAX; meanwhile the worker reads the lock every tick.
WATCH_RETRY_MIN, WATCH_RETRY_MAX = 0.5, 2.0

# gRPC's default reconnect backoff grows to 120 s: after an etcd outage a client would stay
# "unavailable" long after etcd is back (LinK v2 took 8-17 s). Keep the backoff short. Despite
# its name, min_reconnect_backoff is the time a connection attempt is given (gRPC's
# MIN_CONNECT_TIMEOUT, 20 s by default): at 100 ms, a host busy with hundreds of workers
# connecting at once never finished a TCP + HTTP/2 handshake in time ("connection attempt
# timed out before receiving SETTINGS frame"), every worker faulted and bound its VIP.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 5000),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 2000),
]

# When to replace the channel after a call found etcd unavailable. A call that failed at once
# (connection refused, network unreachable): now. A call that ran into its deadline: the next
# member of ETCD_HOSTS at once, until each was tried; then only after this many unavailable
# calls in a row, once the channel is old enough: 2 deadlines, doubling with each replacement
# that did not help, at most 6 (two leases). Replacing it after every slow failure killed
# connection attempts that were merely slow (a busy host, hundreds of workers connecting at
# once), and the next attempt was killed the same way: a slow etcd was never reached again.
FAST_FAILURE_DEADLINES = 0.5
ROTATE_AFTER_FAILURES = 2
ROTATE_MIN_AGE_DEADLINES = 2.0
ROTATE_MAX_AGE_DEADLINES = 6.0

def quiet_grpc_polling() -> None:
    """grpc's Python layer wakes every thread blocked on a stream every 100 ms, so that a main
    thread can run its signal handlers (grpc issue 19464). Our streams are read by worker
    threads, never the main thread: each wake-up is pure cost (two streams per VIP, 20
    wake-ups a second, about a third of an idle worker's CPU). Waits still end at once when
    data arrives; only the idle re-check is slowed. A private constant of grpc (the same in
    grpc 1.51 and 1.8x): if it is gone, nothing happens."""
    import grpc._common as grpc_common

    if isinstance(getattr(grpc_common, "MAXIMUM_WAIT_TIMEOUT", None), float):
        grpc_common.MAXIMUM_WAIT_TIMEOUT = 5.0


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


def _text(raw: bytes) -> str:
    """Bytes read from etcd as text: anyone may have written them, so invalid UTF-8 shows as
    \\xNN (seen in logs as it was written; no byte can fail a later encode)."""
    return raw.decode(errors="backslashreplace")


def _key_info(kv: Any) -> KeyInfo:
    return KeyInfo(_text(kv.value), kv.lease, kv.mod_revision)


class _Compare:
    """Builders for the transaction compares we need (etcd3 0.12 lacks the LEASE one)."""

    @staticmethod
    def create_revision_is_zero(key: bytes) -> etcdrpc.Compare:
        return etcdrpc.Compare(key=key, result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.CREATE, create_revision=0)

    @staticmethod
    def mod_revision_is(key: bytes, revision: int) -> etcdrpc.Compare:
        return etcdrpc.Compare(key=key, result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.MOD, mod_revision=revision)

    @staticmethod
    def lease_is(key: bytes, lease: int) -> etcdrpc.Compare:
        return etcdrpc.Compare(key=key, result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.LEASE, lease=lease)


class GrpcEtcd:
    """EtcdPort over gRPC, rotating through ETCD_HOSTS when a member does not answer."""

    def __init__(self, endpoints: Sequence[EtcdEndpoint], deadline: float, cacert: str = "", cert: str = "", key: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._endpoints = list(endpoints)
        self._deadline = deadline
        self._clock = clock
        self._tls = (_read(cacert), _read(key), _read(cert)) if endpoints[0].secure else None
        self._index = 0
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._closing = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._watch_stream: grpc.Future[Any] | None = None
        self._watches: list[tuple[str, bool, Callable[[], None]]] = []
        self._watch_ready = threading.Event()
        self._watch_lock = threading.Lock()
        self._watch_restart = False
        self._keepalive: KeepAliveStream | None = None
        self._failures = 0  # unavailable calls in a row on this channel
        self._tried = 0  # other members tried since the last call that succeeded
        self._patience = 0  # slow channels replaced since then (each doubles the next wait)
        self._opened = 0.0
        self.stats = CallStats()
        self._connect()

    @classmethod
    def from_config(cls, config: Config) -> "GrpcEtcd":
        quiet_grpc_polling()  # in the worker, after the fork: the supervisor is untouched
        return cls(config.etcd_endpoints, config.etcd_deadline, config.etcd_cacert, config.etcd_tls_cert, config.etcd_tls_key)

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> None:
        endpoint = self._endpoints[self._index]
        target = f"{endpoint.host}:{endpoint.port}"
        if self._tls is not None:
            ca, key, cert = self._tls
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
            self._channel = grpc.secure_channel(target, creds, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self._opened = self._clock()
        self._failures = 0
        self._kv = etcdrpc.KVStub(self._channel)
        self._lease = etcdrpc.LeaseStub(self._channel)
        self._watcher = etcdrpc.WatchStub(self._channel)

    def _rotate(self) -> None:
        """After repeated failures, a fresh channel: to the next member, or to the same single one.

        Fresh even for a single member: Debian 12's grpc 1.51 does not recover a channel whose
        connection attempts failed while etcd was down (later attempts time out "before
        receiving SETTINGS frame" although etcd is back); a new channel connects at once.
        """
        with self._lock:
            old = self._channel
            self._index = (self._index + 1) % len(self._endpoints)
            self._connect()
            if self._keepalive is not None:
                self._keepalive.close()  # it lives on the old channel
                self._keepalive = None
        if len(self._endpoints) > 1:
            logger.info("etcd: switching to %s", self._endpoints[self._index])
        if old is not None:
            old.close()

    def _unavailable(self, took: float) -> None:
        """A call that took `took` seconds found etcd unavailable: replace the channel when
        that helps (module constants above)."""
        self._failures += 1
        if took < FAST_FAILURE_DEADLINES * self._deadline:
            # Failed at once (refused, unreachable): no connection attempt is under way to be
            # cut short, and a fresh channel tries again now; a link that comes back (a healed
            # partition) is used within a tick.
            self._rotate()
            return
        if self._tried < len(self._endpoints) - 1:  # another member may answer: try it now
            self._tried += 1
            self._rotate()
            return
        age = min(ROTATE_MAX_AGE_DEADLINES, ROTATE_MIN_AGE_DEADLINES * 2 ** self._patience) * self._deadline
        if self._failures >= ROTATE_AFTER_FAILURES and self._clock() - self._opened >= age:
            self._patience += 1
            self._rotate()

    def _succeeded(self) -> None:
        self._failures = 0
        self._tried = 0
        self._patience = 0

    def _call(self, method: Callable[..., Any], request: object) -> Any:
        """The response of a unary call (Any: etcd3's generated stubs are untyped)."""
        name = type(request).__name__.removesuffix("Request")  # RangeRequest -> Range
        start = self._clock()
        try:
            response = method(request, timeout=self._deadline)
        except grpc.RpcError as exc:
            error = translate(exc, self._tls is not None)
            took = self._clock() - start
            self.stats.record(name, took, error)
            if isinstance(error, EtcdUnavailable):
                self._unavailable(took)
            raise error from None
        self._succeeded()
        self.stats.record(name, self._clock() - start)
        return response

    # -- EtcdPort ---------------------------------------------------------------------------
    def grant_lease(self, ttl: int) -> tuple[int, int]:
        response = self._call(self._lease.LeaseGrant, etcdrpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise EtcdError(response.error)
        self.stats.lease_grants += 1
        return response.ID, response.TTL

    def keepalive(self, lease_id: int) -> int:
        start = self._clock()
        try:
            if self._keepalive is None or self._keepalive.broken:
                if self._keepalive is not None:
                    self._keepalive.close()
                with self._lock:
                    self._keepalive = KeepAliveStream(self._lease)
            response = self._keepalive.refresh(lease_id, self._deadline)
            if response.TTL <= 0:
                raise LeaseNotFound(f"lease {lease_id:x} expired")
            self._succeeded()
            self.stats.record("LeaseKeepAlive", self._clock() - start)
            self.stats.lease_renewals += 1
            return int(response.TTL)
        except grpc.RpcError as exc:
            error = translate(exc, self._tls is not None)
        except (TimeoutError, EOFError) as exc:
            error = EtcdUnavailable(f"keepalive: {exc}")
        except EtcdError as exc:
            self.stats.record("LeaseKeepAlive", self._clock() - start, exc)
            raise
        took = self._clock() - start
        self.stats.record("LeaseKeepAlive", took, error)
        if isinstance(error, EtcdUnavailable):
            self._unavailable(took)
        raise error

    def revoke_lease(self, lease_id: int) -> None:
        try:
            self._call(self._lease.LeaseRevoke, etcdrpc.LeaseRevokeRequest(ID=lease_id))
        except LeaseNotFound:
            pass

    def get(self, key: str) -> KeyInfo | None:
        response = self._call(self._kv.Range, etcdrpc.RangeRequest(key=key.encode()))
        if not response.kvs:
            return None
        return _key_info(response.kvs[0])

    def get_prefix(self, prefix: str) -> dict[str, KeyInfo]:
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])  # the first key after every key with this prefix
        response = self._call(self._kv.Range, etcdrpc.RangeRequest(key=start, range_end=end))
        return {_text(kv.key): _key_info(kv) for kv in response.kvs}

    def put(self, key: str, value: str, lease: int) -> None:
        self._call(self._kv.Put, etcdrpc.PutRequest(key=key.encode(), value=value.encode(), lease=lease))

    def _txn(self, compare: etcdrpc.Compare, success: etcdrpc.RequestOp) -> bool:
        request = etcdrpc.TxnRequest(compare=[compare], success=[success])
        return bool(self._call(self._kv.Txn, request).succeeded)

    def create_if_absent(self, key: str, value: str, lease: int) -> bool:
        put = etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key.encode(), value=value.encode(), lease=lease))
        return self._txn(_Compare.create_revision_is_zero(key.encode()), put)

    def replace_if_unchanged(self, key: str, value: str, lease: int, mod_revision: int) -> bool:
        put = etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=key.encode(), value=value.encode(), lease=lease))
        return self._txn(_Compare.mod_revision_is(key.encode(), mod_revision), put)

    def delete_if_lease(self, key: str, lease: int) -> bool:
        delete = etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=key.encode()))
        return self._txn(_Compare.lease_is(key.encode(), lease), delete)

    def watch(self, key: str, on_change: Callable[[], None], prefix: bool = False) -> None:
        """Watch `key` (or every key under it) on the adapter's one watch stream.

        All registrations share one gRPC stream and one thread; registering after the stream
        started restarts it with every registration.
        """
        with self._watch_lock:
            self._watches.append((key, prefix, on_change))
            if self._watch_thread is None:
                self._watch_thread = threading.Thread(target=self._watch_loop, name="etcd-watch", daemon=True)
                self._watch_thread.start()
            elif self._watch_stream is not None:
                # The stream was made with the older list: restart it with this one too.
                self._watch_restart = True
                self._watch_stream.cancel()

    @property
    def watch_healthy(self) -> bool:
        """True while every watch is established: then no change to a watched key goes unseen."""
        return self._watch_ready.is_set()

    def call_stats(self) -> dict[str, Any]:
        return self.stats.snapshot()

    def _notify_all(self) -> None:
        for _, _, on_change in list(self._watches):
            on_change()

    def _watch_loop(self) -> None:
        # Bounded: each pass either streams until etcd breaks it or waits 0.5 to 2 s; it ends
        # when the worker closes the adapter (the worker's lifetime bounds it).
        failed_passes = 0  # passes in a row whose stream never came up
        while not self._closing.is_set():
            stop = threading.Event()

            def requests() -> Iterator[etcdrpc.WatchRequest]:
                for key, prefix, _ in watches:
                    start = key.encode()
                    end = start[:-1] + bytes([start[-1] + 1]) if prefix else b""
                    yield etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(key=start, range_end=end))
                stop.wait()

            callbacks: dict[int, Callable[[], None]] = {}
            try:
                # Taking the list and publishing the stream under one lock: a registration
                # either is in this list or finds this stream to cancel.
                with self._watch_lock:
                    watches = list(self._watches)
                    with self._lock:
                        stream = self._watcher.Watch(requests())
                    self._watch_stream = stream
                for response in stream:
                    if response.created:
                        # etcd answers the creates in order; a change made while the watch was
                        # down is caught up by the cycle this triggers.
                        callbacks[response.watch_id] = watches[len(callbacks)][2]
                        callbacks[response.watch_id]()
                        if len(callbacks) == len(watches):
                            self._watch_ready.set()
                        continue
                    if response.canceled:
                        break
                    if response.events and response.watch_id in callbacks:
                        callbacks[response.watch_id]()
            except grpc.RpcError as exc:
                if not self._closing.is_set() and exc.code() != grpc.StatusCode.CANCELLED:
                    logger.debug("etcd watch broken: %s", translate(exc, self._tls is not None))
            finally:
                self._watch_ready.clear()
                stop.set()
            if self._watch_restart:
                self._watch_restart = False
                continue  # cancelled by us to add a watch: no failure, no pause
            if not self._closing.is_set():
                if callbacks:
                    # The stream was up: a change may have gone unseen, the worker looks now.
                    # Not for a stream that never came up: during an outage that was an extra
                    # cycle every 0.5 s per VIP, hundreds of VIPs knocking on a recovering etcd.
                    self._notify_all()
                    failed_passes = 0
                else:
                    failed_passes += 1
                self._closing.wait(min(WATCH_RETRY_MAX, WATCH_RETRY_MIN * 2 ** failed_passes))

    def close(self) -> None:
        self._closing.set()
        if self._keepalive is not None:
            self._keepalive.close()
        stream = self._watch_stream
        if stream is not None:
            stream.cancel()
        if self._channel is not None:
            self._channel.close()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=2)
