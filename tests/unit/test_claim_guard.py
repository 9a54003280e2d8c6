"""The worker's claim guard with fakes at the OS seam (the capture's socket, the binder's
netlink and packets) and the etcd seam: what is logged, reported, announced, and when the
capture is open. Real packets: tests/integration/test_wire_claims.py."""
from __future__ import annotations

import json
import logging
import os
import selectors
from typing import Any

import pytest

from link.adapters.capture import Sighting
from link.vocabulary.agents_key import AGENTS_PREFIX, agent_mac
from link.vocabulary.protocol import ClaimReport, Message
from link.worker.claim_guard import ClaimGuard, peers_by_mac
from link.worker.claim_watch import ClaimTiming
from tests.unit.fake_clock import Clock
from tests.unit.fake_etcd import DEADLINE, FakeEtcd
from tests.unit.test_worker_seams import RETRY, holder_and_standby, hosts, no_process_title  # noqa: F401 (fixtures)
from link.vocabulary.vip_states import State

VIP = "198.51.100.50/32"
OURS, ROGUE, PEER = "02:00:00:00:01:01", "02:00:00:00:0e:0e", "02:00:00:00:01:02"
OTHER_NIC = "02:00:00:00:01:f1"  # this host's second interface on the same LAN
T = ClaimTiming()


class FakeCapture:
    """The capture's seam: sightings queued by the test, probes counted."""

    def __init__(self, interface: str, address: str) -> None:
        self.interface, self.address, self.mac = interface, address, OURS
        self.queued: list[Sighting] = []
        self.probes = 0
        self.closed = False
        self._r, self._w = os.pipe()  # a real descriptor stands for the socket (the selector's)

    def fileno(self) -> int:
        return self._r

    def read(self) -> list[Sighting]:
        found, self.queued = self.queued, []
        return found

    def probe(self) -> None:
        self.probes += 1

    def close(self) -> None:
        self.closed = True
        os.close(self._r)
        os.close(self._w)


class FakeArpBinder:
    """A binder that announces (not the ArpBinder class: the guard goes by the capability the
    Binder protocol declares, so any binder that says `announces` is watched): counts its
    extra announcements."""

    kind = "toy-arp"
    announces = True

    def __init__(self) -> None:
        self.active = True
        self.announced = 0

    def announce_once(self) -> None:
        if self.active:
            self.announced += 1


class NotArp:
    kind = "command"
    announces = False


class Undeclared:
    kind = "older"  # a binder written before `announces`: taken as one that does not announce


class Rig:
    def __init__(self, etcd: FakeEtcd | None = None) -> None:
        self.clock = Clock(100.0)
        self.sent: list[Message] = []
        self.captures: list[FakeCapture] = []
        self.etcd = etcd or FakeEtcd()
        self.binder = FakeArpBinder()
        client = self.etcd.client()
        self.guard = ClaimGuard(VIP, "eth1", self.sent.append, lambda: {"claims": dict(self.guard.counters())},
                                lambda: peers_by_mac(client, "h1"), self.clock, open_capture=self._open,
                                own_macs=lambda: {OTHER_NIC})
        self.guard.use(self.binder)

    def _open(self, interface: str, address: str) -> FakeCapture:
        capture = FakeCapture(interface, address)
        self.captures.append(capture)
        return capture

    @property
    def capture(self) -> FakeCapture:
        return self.captures[-1]

    def claims(self) -> list[ClaimReport]:
        return [m for m in self.sent if isinstance(m, ClaimReport)]

    def run(self, seconds: float, answer: bool = False, step: float = 0.05) -> None:
        """Turn the loop while ACTIVATED; `answer`: the rogue answers every probe."""
        for _ in range(round(seconds / step)):
            probes = self.capture.probes if self.captures else 0
            self.guard.run_due(True)
            if answer and self.capture.probes > probes:
                self.capture.queued.append(Sighting(ROGUE, "arp-reply", self.clock.now))
            self.clock.now += step


def test_a_claim_is_warned_reported_and_answered_by_the_lock_holder(caplog: pytest.LogCaptureFixture) -> None:
    etcd = FakeEtcd()
    lease, _ = etcd.client().grant_lease(30)
    etcd.put_raw(AGENTS_PREFIX + "h2", json.dumps({"addresses": ["198.51.100.12"], "mac": ROGUE.upper()}), lease)
    rig = Rig(etcd)
    rig.guard.set_rightful(True)
    rig.guard.run_due(True)
    assert rig.capture.address == "198.51.100.50" and rig.capture.interface == "eth1"
    rig.capture.queued.append(Sighting(ROGUE, "arp-announce", rig.clock.now))
    with caplog.at_level(logging.WARNING, logger="link.worker.claim_guard"):
        rig.guard.run_due(True)
    assert rig.binder.announced == 1  # at once
    (line,) = [r.getMessage() for r in caplog.records]
    assert ROGUE in line and "host h2" in line and "announcing again" in line
    (report,) = rig.claims()
    assert report.event == "foreign_claim" and report.claim is not None
    assert (report.claim["mac"], report.claim["host"], report.claim["kind"]) == (ROGUE, "h2", "arp-announce")
    assert report.metrics == {"claims": {"detections": 1, "probes": 0, "reannounces": 1}}
    rig.run(T.follow_up + T.reannounce_every + 0.1, answer=True)
    assert rig.binder.announced == 3  # then after the locktime, then every period
    assert len(rig.claims()) == 1 and rig.capture.probes >= 3 / T.probe_fast - 1  # fast probes, no second report


def test_this_hosts_other_interfaces_are_no_claimant() -> None:
    rig = Rig()
    rig.guard.set_rightful(True)
    rig.guard.run_due(True)
    # ARP flux: the kernel answered the probe from the host's other interface on the LAN.
    rig.capture.queued += [Sighting(OTHER_NIC, "arp-reply", rig.clock.now), Sighting(OURS, "arp-reply", rig.clock.now)]
    rig.run(1.0)
    assert rig.claims() == [] and rig.binder.announced == 0


def test_the_claim_ends_with_one_report_and_the_field_cleared() -> None:
    rig = Rig()
    rig.guard.set_rightful(True)
    rig.guard.run_due(True)
    rig.capture.queued.append(Sighting(ROGUE, "na", rig.clock.now))
    rig.run(T.expires_after + 0.2)
    first, over = rig.claims()
    assert first.claim is not None and first.claim["host"] is None  # no peer publishes that MAC
    assert (over.event, over.claim) == ("foreign_claim_over", None)


def test_without_the_lock_the_claim_is_reported_and_not_fought(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.guard.set_rightful(False)
    rig.guard.run_due(True)
    rig.capture.queued.append(Sighting(ROGUE, "arp-reply", rig.clock.now))
    with caplog.at_level(logging.WARNING, logger="link.worker.claim_guard"):
        rig.run(3.0, answer=True)
    assert rig.binder.announced == 0 and "not fighting" in caplog.text
    assert [r.event for r in rig.claims()] == ["foreign_claim"]


def test_the_capture_is_open_only_while_activated_and_its_socket_wakes_the_loop() -> None:
    rig = Rig()
    with selectors.DefaultSelector() as selector:
        rig.guard.attach(selector)
        rig.guard.run_due(False)
        assert rig.captures == [] and rig.guard.next_due() is None
        rig.guard.run_due(True)
        assert [key.fileobj for key in selector.get_map().values()] == [rig.capture]
        assert rig.guard.next_due() is not None
        rig.capture.queued.append(Sighting(ROGUE, "arp-reply", rig.clock.now))
        rig.guard.run_due(True)
        rig.guard.run_due(False)  # STANDBY: closed, out of the selector, the claim no longer watched
        assert rig.capture.closed and not selector.get_map()
        assert [r.event for r in rig.claims()] == ["foreign_claim", "foreign_claim_over"]


@pytest.mark.parametrize("binder", [NotArp(), Undeclared()], ids=["announces-false", "undeclared"])
def test_binders_that_do_not_announce_are_not_watched(binder: object) -> None:
    rig = Rig()
    rig.guard.use(binder)  # type: ignore[arg-type]
    rig.guard.run_due(True)
    assert rig.captures == [] and rig.guard.next_due() is None


def test_the_real_binders_declare_whether_they_announce() -> None:
    from link.worker.binders import implementations

    assert {kind: cls.announces for kind, cls in implementations().items()} == {  # type: ignore[attr-defined]
        "arp": True, "command": False, "webhook": False}


def test_a_capture_that_cannot_open_is_said_once_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    attempts = []

    def refuse(interface: str, address: str) -> Any:
        attempts.append(address)
        raise PermissionError(1, "Operation not permitted")

    rig.guard.open_capture = refuse
    with caplog.at_level(logging.WARNING, logger="link.worker.claim_guard"):
        for _ in range(3):
            rig.guard.run_due(True)
    assert len(attempts) == 3 and caplog.text.count("cannot watch") == 1


def test_peers_are_named_by_their_published_mac_from_leased_keys_only() -> None:
    etcd = FakeEtcd()
    client = etcd.client()
    lease, _ = client.grant_lease(30)
    etcd.put_raw(AGENTS_PREFIX + "h2", json.dumps({"addresses": [], "mac": PEER}), lease)
    etcd.put_raw(AGENTS_PREFIX + "h3", json.dumps({"addresses": [], "mac": ROGUE}))  # no lease: anyone's
    etcd.put_raw(AGENTS_PREFIX + "h1", json.dumps({"addresses": [], "mac": OURS}), lease)
    etcd.put_raw(AGENTS_PREFIX + "h4", json.dumps({"addresses": []}), lease)  # an older agent
    assert peers_by_mac(client, "h1") == {PEER: "h2"}


@pytest.mark.parametrize("value, mac", [
    ('{"mac": "02:00:00:00:01:02"}', PEER), ('{"mac": "02:00:00:00:01:0X"}', None), ('{"mac": 7}', None),
    ("[1]", None), ("not json", None), ('{"addresses": []}', None),
])
def test_the_published_mac_is_read_strictly(value: str, mac: str | None) -> None:
    assert agent_mac(value) == mac


def test_etcd_down_leaves_the_host_unknown_and_the_holder_still_announces() -> None:
    etcd = FakeEtcd()
    rig = Rig(etcd)
    etcd.fail(DEADLINE)
    rig.guard.set_rightful(True)
    rig.guard.run_due(True)
    rig.capture.queued.append(Sighting(ROGUE, "arp-announce", rig.clock.now))
    rig.guard.run_due(True)
    (report,) = rig.claims()
    assert report.claim is not None and report.claim["host"] is None and rig.binder.announced == 1


def test_what_the_api_process_publishes_is_what_the_workers_read() -> None:
    from link.api.agents_directory import HostsDirectory

    etcd = FakeEtcd()
    HostsDirectory(etcd.client(), "h2", lambda: ["198.51.100.12"], mac=lambda: PEER).publish_once()
    HostsDirectory(etcd.client(), "h3", lambda: ["198.51.100.13"]).publish_once()  # no MAC known: none published
    assert peers_by_mac(etcd.client(), "h1") == {PEER: "h2"}
    assert json.loads(etcd.keys[AGENTS_PREFIX + "h2"].value)["addresses"] == ["198.51.100.12"]  # LinK-free prefix kept


def test_closing_after_the_loops_selector_closed_still_closes_the_capture() -> None:
    rig = Rig()
    with selectors.DefaultSelector() as selector:  # the worker's run() ends before its shutdown()
        rig.guard.attach(selector)
        rig.guard.run_due(True)
    rig.guard.close()
    assert rig.capture.closed


# -- who is rightful: the Worker's election cycles on the fake etcd ----------------------------
@pytest.mark.parametrize("policy", ["activate", "keep", "release", "arbitrate"])
def test_only_a_worker_that_reads_the_lock_as_its_own_fights(hosts: Any, policy: str) -> None:
    store, clock, h1, h2 = holder_and_standby(hosts, policy)
    assert h1.worker.claims.rightful and not h2.worker.claims.rightful
    h1.etcd.fail(DEADLINE)  # h1 cut from etcd, whatever its policy does with the VIP meanwhile
    for _ in range(RETRY + 2):  # before the fault, at it (keep: no event at all) and after
        clock.now += h1.worker.config.tick
        h1.cycle()
        assert not h1.worker.claims.rightful
    h1.etcd.recover()
    clock.now += h1.worker.config.tick
    h1.cycle()
    assert h1.worker.claims.rightful and h1.worker.fsm.state is State.ACTIVATED  # its lease still holds the lock


def test_a_flood_of_forged_claimants_is_warned_about_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.guard.set_rightful(True)
    rig.guard.run_due(True)
    with caplog.at_level(logging.WARNING, logger="link.worker.claim_guard"):
        for i in range(40):  # a new forged MAC every 0.5 s for 20 s
            rig.capture.queued.append(Sighting(f"02:00:00:00:0f:{i:02x}", "arp-announce", rig.clock.now))
            rig.run(0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "more claims in the last 10s not logged" in warnings[1]
    assert len([r for r in rig.claims() if r.event == "foreign_claim"]) == 40  # each is still an event


def test_the_watch_probes_at_the_host_s_budget() -> None:
    from link import probe_budget

    rig = Rig()
    rig.guard.probe_rate = 10.0
    before = probe_budget.vips()
    probe_budget.set_vips(500)
    try:
        rig.guard.run_due(True)
        assert rig.guard.watch is not None and rig.guard.watch.idle_period() == 50.0
    finally:
        probe_budget.set_vips(before)


def test_every_claim_event_is_documented_in_the_readme() -> None:
    import pathlib

    from link.vocabulary.claim_events import ClaimNote

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### On the wire: duplicate claims", 1)[1].split("\n### ", 1)[0]
    assert [note.value for note in ClaimNote if f"`{note.value}`" not in section] == []
