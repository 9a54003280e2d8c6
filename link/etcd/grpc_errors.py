"""What a gRPC failure from etcd means: the one place that turns a gRPC status into the
EtcdPort's errors (link.etcd.port), which the election and the fault policies act on."""
from __future__ import annotations

import grpc

from link.etcd.port import EtcdError, EtcdUnavailable, LeaseNotFound

UNAVAILABLE_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}


def translate(exc: grpc.RpcError, tls: bool = False) -> EtcdError:
    """The one place that decides what a gRPC failure from etcd means."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or str(code)
    if code == grpc.StatusCode.NOT_FOUND and "lease" in details:
        return LeaseNotFound(details)
    lowered = details.lower()
    # Only over TLS: a plain connection's "tcp handshaker shutdown" is no certificate problem.
    if tls and ("certificate" in lowered or "ssl" in lowered or "tls" in lowered):
        return EtcdUnavailable(
            "TLS handshake with etcd failed (is ETCD_CACERT the CA of the etcd members, and are "
            f"ETCD_TLS_CERT/ETCD_TLS_KEY a client certificate they trust?): {details}"
        )
    if code in UNAVAILABLE_CODES or "leader" in details:
        # "etcdserver: no leader" / "leader changed": the cluster cannot serve right now.
        return EtcdUnavailable(f"{code.name if code else 'error'}: {details}")
    return EtcdError(f"{code.name if code else 'error'}: {details}")

