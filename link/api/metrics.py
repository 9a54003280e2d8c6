"""`GET /metrics`: the supervisor's numbers in the Prometheus text format.

The numbers come from the workers through the supervisor (the `metrics` pipe op, see
`link.supervisor.observe`); this module only renders them, with a prometheus_client Collector
in a registry made for the request, so the API process keeps no metric state of its own.
Works with prometheus_client 0.16 (Debian 12) and later.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from link.vocabulary.notify_words import NotifyOutcome
from link.vocabulary.vip_states import State

STATES = tuple(state.value for state in State)
NOTIFY_OUTCOMES = tuple(outcome.value for outcome in NotifyOutcome)
VIP_LABELS = ["id", "ip"]

__all__ = ["CONTENT_TYPE_LATEST", "LinkCollector", "render"]


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class LinkCollector:
    """Turns one `metrics` answer into metric families (collected once, then dropped)."""

    def __init__(self, answer: Mapping[str, Any], version: str, clock: Callable[[], float] = time.time) -> None:
        self.answer = answer
        self.version = version
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("link_build_info", "The running link agent's version (always 1).", labels=["version"])
        build.add_metric([self.version], 1)
        yield build
        yield GaugeMetricFamily("link_workers", "Worker processes running (one per VIP).", value=_number(self.answer.get("workers")))
        vips = [v for v in self.answer.get("vips") or [] if isinstance(v, Mapping)]
        yield from self._vip_families(vips)
        yield from self._wire_families(_mapping(self.answer.get("wire")))

    def _wire_families(self, wire: Mapping[str, Any]) -> Iterator[Metric]:
        """The heartbeat between agents (link.supervisor.wire_link); nothing without one."""
        if not wire:
            return
        yield CounterMetricFamily("link_wire_heartbeats_sent", "Heartbeat datagrams sent to the peers.",
                                  value=_number(wire.get("sent")))
        yield CounterMetricFamily("link_wire_heartbeats_received", "Heartbeats received and accepted.",
                                  value=_number(wire.get("received")))
        dropped = CounterMetricFamily("link_wire_heartbeats_dropped", "Datagrams dropped, by reason (decode: not a "
                                      "heartbeat; auth: bad or missing MAC; replay: not newer; self: our own name; "
                                      "source: unsigned, from no known peer; peers: peer table full).",
                                      labels=["reason"])
        for reason in sorted({"decode", "auth", "replay", "self", "source", "peers", *_mapping(wire.get("dropped"))}):
            dropped.add_metric([str(reason)], _number(_mapping(wire.get("dropped")).get(reason)))
        yield dropped
        yield GaugeMetricFamily("link_wire_peers_alive", "Peers whose heartbeat came within 3 intervals.",
                                value=_number(wire.get("peers_alive")))

    def _vip_families(self, vips: list[Mapping[str, Any]]) -> Iterator[Metric]:
        now = self.clock()
        state = GaugeMetricFamily("link_vip_state", "1 for the state the VIP is in on this host, 0 for the others.",
                                  labels=VIP_LABELS + ["state"])
        since = GaugeMetricFamily("link_vip_seconds_since_transition", "Seconds since the VIP's last state change on this host.",
                                  labels=VIP_LABELS)
        changed = GaugeMetricFamily("link_vip_last_transition_timestamp_seconds", "Unix time of the VIP's last state change.",
                                    labels=VIP_LABELS)
        respawns = CounterMetricFamily("link_worker_respawns", "Times the VIP's worker was respawned after it exited.",
                                       labels=VIP_LABELS)
        transitions = CounterMetricFamily("link_vip_transitions", "State changes of the VIP on this host, by event.",
                                          labels=VIP_LABELS + ["event"])
        packets = CounterMetricFamily("link_vip_announcement_packets",
                                      "Gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) packets sent.",
                                      labels=VIP_LABELS)
        checks = CounterMetricFamily("link_vip_health_checks", "Health check results, by outcome (pass or fail).",
                                     labels=VIP_LABELS + ["outcome"])
        check_time = SummaryMetricFamily("link_vip_health_check_duration_seconds", "Time taken by the health checks.",
                                         labels=VIP_LABELS)
        etcd_time = SummaryMetricFamily("link_vip_etcd_request_duration_seconds", "etcd requests of the VIP's worker, by method.",
                                        labels=VIP_LABELS + ["method"])
        etcd_errors = CounterMetricFamily("link_vip_etcd_errors", "Failed etcd requests, by method and kind "
                                          "(unavailable, refused, lease_not_found).", labels=VIP_LABELS + ["method", "kind"])
        renewals = CounterMetricFamily("link_vip_lease_renewals", "Successful refreshes of the VIP's etcd lease.", labels=VIP_LABELS)
        grants = CounterMetricFamily("link_vip_lease_grants", "etcd leases granted to the VIP's worker.", labels=VIP_LABELS)
        takeovers = CounterMetricFamily("link_vip_leaseless_lock_takeovers",
                                        "Locks found without a lease (held by no host) that this host took over.",
                                        labels=VIP_LABELS)
        claims = CounterMetricFamily("link_vip_foreign_claims", "Claims of the VIP by another MAC (ARP, neighbour "
                                     "advertisement) seen while this host held it.", labels=VIP_LABELS)
        claiming = GaugeMetricFamily("link_vip_foreign_claim", "1 while another MAC is seen claiming the VIP this host holds.",
                                     labels=VIP_LABELS)
        probes = CounterMetricFamily("link_vip_claim_probes", "ARP probes or neighbour solicitations sent for the VIP "
                                     "to find a silent claimant.", labels=VIP_LABELS)
        notify = CounterMetricFamily("link_vip_notify_runs", "Notify program runs, by outcome (ok, failed: non-zero "
                                     "exit or could not start, timed_out: killed at NOTIFY_TIMEOUT, refused: not run, "
                                     "SCRIPTS_DIR's rule, dropped: never run, backlog full or worker stopped).",
                                     labels=VIP_LABELS + ["outcome"])
        for vip in vips:
            labels = [str(vip.get("id", "")), str(vip.get("ip", ""))]
            for name in STATES:
                state.add_metric(labels + [name], 1 if vip.get("status") == name else 0)
            last = _number(vip.get("since"))
            since.add_metric(labels, max(0.0, now - last))
            changed.add_metric(labels, last)
            respawns.add_metric(labels, _number(vip.get("restarts")))
            numbers = _mapping(vip.get("metrics"))
            for event, count in sorted(_mapping(numbers.get("transitions")).items()):
                transitions.add_metric(labels + [str(event)], _number(count))
            packets.add_metric(labels, _number(numbers.get("announce_packets")))
            health = _mapping(numbers.get("health"))
            results = _mapping(health.get("results"))
            for outcome in ("pass", "fail"):
                checks.add_metric(labels + [outcome], _number(results.get(outcome)))
            check_time.add_metric(labels, count_value=int(_number(health.get("count"))), sum_value=_number(health.get("seconds")))
            etcd = _mapping(numbers.get("etcd"))
            seconds = _mapping(etcd.get("seconds"))
            for method, count in sorted(_mapping(etcd.get("requests")).items()):
                etcd_time.add_metric(labels + [str(method)], count_value=int(_number(count)),
                                     sum_value=_number(seconds.get(method)))
            for method, kinds in sorted(_mapping(etcd.get("errors")).items()):
                for kind, count in sorted(_mapping(kinds).items()):
                    etcd_errors.add_metric(labels + [str(method), str(kind)], _number(count))
            renewals.add_metric(labels, _number(etcd.get("lease_renewals")))
            grants.add_metric(labels, _number(etcd.get("lease_grants")))
            takeovers.add_metric(labels, _number(_mapping(numbers.get("election")).get("leaseless_lock_takeovers")))
            claims.add_metric(labels, _number(_mapping(numbers.get("claims")).get("detections")))
            probes.add_metric(labels, _number(_mapping(numbers.get("claims")).get("probes")))
            claiming.add_metric(labels, _number(vip.get("foreign_claim")))
            runs = _mapping(numbers.get("notify"))
            for outcome in NOTIFY_OUTCOMES:
                notify.add_metric(labels + [outcome], _number(runs.get(outcome)))
        yield from (state, since, changed, respawns, transitions, packets, checks, check_time, etcd_time, etcd_errors,
                    renewals, grants, takeovers, claims, claiming, probes, notify)


def render(answer: Mapping[str, Any], version: str, clock: Callable[[], float] = time.time) -> bytes:
    """The Prometheus text exposition of one `metrics` answer."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LinkCollector(answer, version, clock))
    return generate_latest(registry)
