"""One long-lived LeaseKeepAlive stream per worker.

A keepalive is a bidirectional stream in etcd's API. Opening one per refresh, as etcd3's
client does, costs a new HTTP/2 stream and a new request-consumer thread in grpc every time
(about three times a unary call's CPU); at four refreshes per lease and hundreds of VIPs
per host that is the agent's main idle cost. This keeps one stream open and reuses it.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import grpc
from etcd3 import etcdrpc

_CLOSE = object()


class KeepAliveStream:
    def __init__(self, stub: etcdrpc.LeaseStub) -> None:
        # Any: etcd3's generated messages are untyped; the queues also carry _CLOSE and errors.
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call = stub.LeaseKeepAlive(self._feed())
        self._reader = threading.Thread(target=self._read, name="etcd-keepalive", daemon=True)
        self._reader.start()
        self.broken = False

    def _feed(self) -> Iterator[etcdrpc.LeaseKeepAliveRequest]:
        # Bounded by the stream's life: ends when close() queues _CLOSE.
        while True:
            item = self._requests.get()
            if item is _CLOSE:
                return
            yield item

    def _read(self) -> None:
        try:
            for answer in self._call:
                self._answers.put(answer)
        except grpc.RpcError as exc:
            self._answers.put(exc)
        self._answers.put(_CLOSE)

    def refresh(self, lease_id: int, deadline: float) -> etcdrpc.LeaseKeepAliveResponse:
        """Send one keepalive and wait for its answer; raise grpc.RpcError, TimeoutError, or
        EOFError (stream closed). Any failure leaves the stream `broken`: open a new one."""
        while True:  # answers to earlier requests that timed out are stale: drop them
            try:
                stale = self._answers.get_nowait()
            except queue.Empty:
                break
            if stale is _CLOSE or isinstance(stale, Exception):
                self.broken = True
                raise stale if isinstance(stale, Exception) else EOFError("keepalive stream closed")
        self._requests.put(etcdrpc.LeaseKeepAliveRequest(ID=lease_id))
        for _ in range(8):  # bounded: a wrong-ID answer can only come from an earlier request
            try:
                answer = self._answers.get(timeout=deadline)
            except queue.Empty:
                self.broken = True
                raise TimeoutError(f"no keepalive answer within {deadline:g}s") from None
            if answer is _CLOSE:
                self.broken = True
                raise EOFError("keepalive stream closed")
            if isinstance(answer, Exception):
                self.broken = True
                raise answer
            if answer.ID == lease_id:
                return answer
        self.broken = True
        raise EOFError("keepalive stream answered other leases")

    def close(self) -> None:
        self.broken = True
        self._requests.put(_CLOSE)
        self._call.cancel()
