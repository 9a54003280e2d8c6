"""A VIP that follows a leader key (link.worker.follow): the Follower against the fake etcd, a
real Worker on its seams (its state machine, FAULT_POLICY, the hand-over refused), and the
API's checks of `follow` and `follow_value` (link.vocabulary.leader_keys)."""
from __future__ import annotations

import json
from multiprocessing import Pipe
from typing import Callable, Iterator

import bottle
import pytest

from link.api import make_app
from link.api.validation import ApiError, parse_add_body, parse_update_body
from link.cli.link_client import EXIT_SERVER
from link.config import load
from link.etcd.port import EtcdError
from link.supervisor.records import VipRecord
from link.vocabulary import protocol
from link.vocabulary.protocol import FailoverDone, HandOver, Message, WireReport, WireView
from link.vocabulary.wire_views import HeardPeer
from link.vocabulary.vip import VipSpec, candidate_key, lock_key
from link.vocabulary.vip_states import Event, State
from link.worker import main as worker_main
from link.worker.follow import Follower
from link.worker.main import Worker
from tests.unit.api_fakes import FakeSupervisor, wsgi_request
from tests.unit.test_client import clean_env, fields, host, module_scripts, run, servers, sup  # noqa: F401 (fixtures)
from tests.unit.fake_clock import Clock
from tests.unit.fake_etcd import DEADLINE, DENIED, REFUSED, FakeEtcd, FakeEtcdClient
from tests.unit.test_worker_seams import Host as SeamsHost
from tests.unit.test_worker_seams import RecordingBinder

VIP = "198.51.100.60/32"
KEY = "/service/pg/leader"  # Patroni's leader key: /<namespace>/<scope>/leader
RETRY = 3


def follower(store: FakeEtcd, host: str, value: str = "") -> Follower:
    return Follower(store.client(), VIP, host, ttl=2, retry=RETRY, key=KEY, value=value, priority=100,
                    clock=lambda: 0.0)


# ------------------------------------------------------------------ the Follower's cycle
def test_the_key_naming_this_host_elects_it_and_nothing_is_written_but_its_candidacy() -> None:
    store = FakeEtcd()
    store.put_raw(KEY, "h1")
    h1 = follower(store, "h1")
    result = h1.run_cycle()
    assert (result.event, result.holder) == (Event.ELECTED, "h1")
    assert f"{KEY} names this host (h1)" in result.sentence
    # No lock of its own: the key is Patroni's and stays as it was; the VIP's lock is never taken.
    assert store.keys[KEY].value == "h1" and store.keys[KEY].lease == 0
    assert lock_key(VIP) not in store.keys
    # What any worker publishes, on its lease: who serves the VIP.
    assert store.keys[candidate_key(VIP, "h1")].lease == h1.lease_id
    assert "no lock of its own" in h1.give_up_lock() and store.keys[KEY].value == "h1"


def test_the_key_naming_another_host_demotes_and_names_it() -> None:
    store = FakeEtcd()
    store.put_raw(KEY, "pg-node-2")
    result = follower(store, "h1").run_cycle()
    assert (result.event, result.holder) == (Event.DEMOTED, "pg-node-2")
    assert f"{KEY} names pg-node-2" in result.sentence


@pytest.mark.parametrize("value", [None, ""], ids=["deleted", "empty"])
def test_a_deleted_or_empty_key_is_no_holder(value: str | None) -> None:
    store = FakeEtcd()
    if value is not None:
        store.put_raw(KEY, value)
    result = follower(store, "h1").run_cycle()
    assert (result.event, result.holder) == (Event.DEMOTED, None)
    assert ("deleted" if value is None else "empty") in result.sentence


def test_follow_value_is_the_name_that_means_this_host() -> None:
    store = FakeEtcd()
    store.put_raw(KEY, "h1")  # this host's HOSTNAME, but Patroni knows it as pg-a
    h1 = follower(store, "h1", value="pg-a")
    assert h1.run_cycle().event is Event.DEMOTED
    store.put_raw(KEY, "pg-a")
    assert h1.run_cycle().event is Event.ELECTED


def test_an_ineligible_host_named_by_the_key_does_not_bind() -> None:
    store = FakeEtcd()
    store.put_raw(KEY, "h1")
    result = follower(store, "h1").run_cycle(eligible=False)
    assert result.event is None and "not eligible" in result.sentence


def test_a_trusted_cycle_reads_nothing_until_the_watch_says_the_key_changed() -> None:
    store = FakeEtcd()
    store.put_raw(KEY, "h1")
    h1 = follower(store, "h1")
    woken: list[int] = []
    h1.watch(lambda: woken.append(1))
    assert h1.run_cycle().event is Event.ELECTED
    client = h1.etcd
    assert isinstance(client, FakeEtcdClient)
    client.calls.clear()
    assert h1.run_cycle(lock_unchanged=True).event is Event.ELECTED
    assert client.calls == ["keepalive"]  # the lease only: the key is not read again
    store.put_raw(KEY, "h2")  # Patroni's failover: the watch fires
    assert woken == [1]
    # Even a cycle that would trust the watch reads the key again after a change.
    result = h1.run_cycle(lock_unchanged=True)
    assert (result.event, result.holder) == (Event.DEMOTED, "h2")


def test_etcd_errors_count_toward_keepalive_retry_then_fault() -> None:
    store = FakeEtcd()
    store.put_raw(KEY, "h1")
    h1 = follower(store, "h1")
    h1.run_cycle()
    store.fail(REFUSED)
    for attempt in range(1, RETRY):
        result = h1.run_cycle()
        assert result.event is None and f"({attempt}/{RETRY})" in result.sentence
    assert h1.run_cycle().event is Event.FAULT
    store.recover()
    assert h1.run_cycle().event is Event.ELECTED and h1.failures == 0


# ------------------------------------------------------------------ the worker, FAULT_POLICY
class NoAnswers:
    """The ARP/NDP capture of a standby waiting during an outage: nobody answers for the VIP."""

    def fileno(self) -> int:
        return -1

    def read(self) -> list[object]:
        return []

    def probe(self) -> None:
        pass

    def close(self) -> None:
        pass


class Host(SeamsHost):
    """One host's worker for a followed VIP on the shared fake etcd (cycle and close: test_worker_seams)."""

    def __init__(self, store: FakeEtcd, clock: Clock, name: str, policy: str, follow_value: str = "") -> None:
        config = load({"INTERFACE": "lo", "HOSTNAME": name, "KEEPALIVE_RETRY": str(RETRY), "FAULT_POLICY": policy})
        self.supervisor, theirs = Pipe()
        self.etcd = store.client()
        spec = VipSpec(id=f"vip-{name}", ip=VIP, follow=KEY, follow_value=follow_value)
        self.worker = Worker(config, spec, theirs, etcd=self.etcd, clock=clock, binder=RecordingBinder)
        self.worker.wire.open_capture = lambda interface, address: NoAnswers()  # no raw socket in a unit test
        self.worker.boot()
        self.worker.start_election()
        binder = self.worker.binder
        assert isinstance(binder, RecordingBinder)
        self.binder = binder


@pytest.fixture(autouse=True)
def no_process_title(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_main, "setproctitle", lambda title: None)


Pair = Callable[[str], tuple[FakeEtcd, Clock, Host, Host]]


@pytest.fixture
def pair() -> Iterator[Pair]:
    made: list[Host] = []

    def make(policy: str) -> tuple[FakeEtcd, Clock, Host, Host]:
        store, clock = FakeEtcd(), Clock()
        store.put_raw(KEY, "h1")
        made.extend([Host(store, clock, "h1", policy), Host(store, clock, "h2", policy)])
        h1, h2 = made[-2:]
        assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
        assert h1.binder.bound and not h2.binder.bound
        return store, clock, h1, h2

    yield make
    for host in made:
        host.close()


def test_the_vip_moves_with_the_key_and_no_host_binds_it_without_one(pair: Pair) -> None:
    store, clock, h1, h2 = pair("arbitrate")
    patroni_lease, _ = store.client().grant_lease(10)
    store.put_raw(KEY, "h2", patroni_lease)  # Patroni promoted h2 (its key is on its lease)
    assert h1.worker._lock_changed and h2.worker._lock_changed  # the watch wakes both workers
    assert h1.cycle() is State.STANDBY and h2.cycle() is State.ACTIVATED
    assert h1.worker.holder == "h2" and h2.worker.holder == "h2"
    store.expire(patroni_lease)  # h2's Patroni died: no leader
    assert h2.cycle() is State.STANDBY and h1.cycle() is State.STANDBY
    assert not h1.binder.bound and not h2.binder.bound and h2.worker.holder is None
    assert lock_key(VIP) not in store.keys


def run_until_fault(h1: Host, h2: Host, clock: Clock) -> None:
    """The RETRY-th failed cycle is the fault; the outage then lasts several leases."""
    for _ in range(RETRY + 10):
        clock.now += h1.worker.config.tick
        h1.cycle()
        h2.cycle()


@pytest.mark.parametrize(("policy", "bound"), [
    ("activate", [True, True]),  # LinK's rule: every host binds
    ("keep", [True, False]),
    ("release", [False, False]),
])
@pytest.mark.parametrize("error", [DEADLINE, DENIED], ids=["deadline", "denied"])
def test_etcd_unreachable_the_fault_policy_applies(pair: Pair, policy: str, bound: list[bool],
                                                   error: EtcdError) -> None:
    store, clock, h1, h2 = pair(policy)
    store.fail(error)
    run_until_fault(h1, h2, clock)
    assert [h1.binder.bound, h2.binder.bound] == bound
    assert h1.worker.election is not None and h1.worker.election.failures >= RETRY
    store.recover()  # etcd back: the key decides again
    assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY
    assert [h1.binder.bound, h2.binder.bound] == [True, False]


def heard(host: Host, holders: list[HeardPeer], clock: Clock) -> None:
    """What the supervisor sends a worker of the peers' heartbeats for the VIP (one interval: 1 s)."""
    host.supervisor.send(protocol.encode(WireView(tuple(holders), tuple(holders), clock.now if holders else None, 1.0)))
    host.worker.link.read()


@pytest.mark.parametrize("error", [DEADLINE, DENIED], ids=["deadline", "denied"])
def test_arbitrate_etcd_down_everywhere_the_holder_keeps_it_the_standby_hearing_it_waits(
        pair: Pair, error: EtcdError) -> None:
    store, clock, h1, h2 = pair("arbitrate")
    assert h1.worker.fault_policy == "arbitrate"  # applied to a followed VIP as to an elected one
    store.fail(error)
    for _ in range(RETRY + 10):
        clock.now += h1.worker.config.tick
        heard(h2, [HeardPeer("h1", 10, lock=False)], clock)  # h1's heartbeat: bound, etcd lost
        h1.cycle()
        h2.cycle()
    assert [h1.binder.bound, h2.binder.bound] == [True, False]
    assert h1.worker.wire.verdict is not None and h1.worker.wire.verdict.decision.value == "keep"
    store.recover()  # etcd back: the key decides again
    assert h1.cycle() is State.ACTIVATED and h2.cycle() is State.STANDBY


def test_arbitrate_the_old_primary_s_host_cut_from_etcd_yields_to_the_host_the_key_names(pair: Pair) -> None:
    # Patroni fails over while the old primary's host alone cannot reach etcd: the new primary's
    # agent binds on the key's word and says so (`lock`) in its heartbeat; the cut host lets go.
    store, clock, h1, h2 = pair("arbitrate")
    h1.etcd.fail(DEADLINE)
    store.put_raw(KEY, "h2")
    sent: list[Message] = []
    send = h2.worker.link.send
    h2.worker.link.send = lambda message: (sent.append(message), send(message))[1]  # type: ignore[method-assign]
    assert h2.cycle() is State.ACTIVATED and h2.binder.bound
    reports = [m for m in sent if isinstance(m, WireReport)]
    assert reports and reports[-1].bound and reports[-1].lock  # what h2's heartbeat says of the VIP
    for _ in range(RETRY + 2):
        clock.now += h1.worker.config.tick
        heard(h1, [HeardPeer("h2", 10, lock=True)], clock)
        h1.cycle()
        if not h1.binder.bound:
            break
    assert not h1.binder.bound and h1.worker.fsm.state is State.STANDBY and h2.binder.bound


@pytest.mark.parametrize("policy", ["keep", "activate"])
def test_keep_and_activate_leave_the_cut_holder_bound_beside_the_key_s_host(pair: Pair, policy: str) -> None:
    store, clock, h1, h2 = pair(policy)  # the double README's table warns of, for these two
    h1.etcd.fail(DEADLINE)
    store.put_raw(KEY, "h2")
    assert h2.cycle() is State.ACTIVATED
    for _ in range(RETRY + 2):
        clock.now += h1.worker.config.tick
        h1.cycle()
    assert h1.binder.bound and h2.binder.bound


def test_a_failover_request_is_refused_the_key_owner_moves_the_vip(pair: Pair) -> None:
    store, clock, h1, h2 = pair("arbitrate")
    answer = h1.worker.commands.hand_over(HandOver(7))
    assert isinstance(answer, FailoverDone) and answer.status == 409 and KEY in answer.error
    assert h1.binder.bound and store.keys[KEY].value == "h1"


# ------------------------------------------------------------------ the API's checks
@pytest.mark.parametrize("key", [KEY, "/service/batman/leader", "/db/pg-15_main.x/leader"])
def test_good_keys_are_taken_with_the_value(key: str) -> None:
    body = parse_add_body(f'{{"ip": "{VIP}", "follow": "{key}", "follow_value": "pg-1"}}'.encode())
    assert (body["follow"], body["follow_value"]) == (key, "pg-1")
    assert VipSpec.from_json({"id": "vip-x", **body}).follow == key


@pytest.mark.parametrize(("key", "words"), [
    ("service/pg/leader", "absolute"),
    ("/link/default/198.51.100.50_32", "/link/"),
    ("/link", "/link/"),
    ("/service//leader", "empty"),
    ("/service/pg/leader/", "empty"),
    ("/service/../link/x", "'..'"),
    ("/service/pg leader", "white space"),
    ("/service/pg/l\u00e9ader", "ASCII"),
    ("/service/pg/\nleader", "white space"),
    ("/" + "a" * 255, "255"),
    (42, "JSON number"),
])
def test_bad_keys_are_refused_naming_the_field_and_nothing_is_created(key: object, words: str) -> None:
    sup = FakeSupervisor()
    app: bottle.Bottle = make_app(sup, version="1")
    res = wsgi_request(app, "POST", "/ips", {"ip": VIP, "follow": key}, {"Content-Type": "application/json"})
    assert res.status == 400 and res.headers["content-type"] == "application/json"
    error = res.json()["error"]
    assert error.startswith("follow must") and words in error
    assert sup.requests == []  # nothing reached the supervisor: nothing created


@pytest.mark.parametrize(("body", "words"), [
    ({"follow_value": "pg-1"}, "only used with follow"),
    ({"follow": KEY, "follow_value": " pg-1"}, "white space"),
    ({"follow": KEY, "follow_value": 3}, "JSON number"),
    ({"follow": KEY, "follow_value": "x" * 254}, "253"),
])
def test_bad_values_are_refused_naming_the_field(body: dict[str, object], words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_add_body(json.dumps({"ip": VIP, **body}).encode())
    assert caught.value.status == 400 and str(caught.value).startswith("follow_value") and words in str(caught.value)


def test_an_update_cannot_change_the_key() -> None:
    with pytest.raises(ApiError) as caught:
        parse_update_body(f'{{"follow": "{KEY}"}}'.encode())
    assert caught.value.status == 400 and "unknown field 'follow'" in str(caught.value)


def test_the_api_passes_the_key_to_the_supervisor() -> None:
    sup = FakeSupervisor()
    app: bottle.Bottle = make_app(sup, version="1")
    res = wsgi_request(app, "POST", "/ips", {"ip": VIP, "follow": KEY}, {"Content-Type": "application/json"})
    assert res.status == 201
    assert sup.requests == [{"op": "add", "ip": VIP, "follow": KEY, "follow_value": ""}]


def test_the_ip_document_shows_the_key_and_the_value_that_means_this_host() -> None:
    config = load({"INTERFACE": "lo", "HOSTNAME": "pg-node-1"})
    followed = VipRecord(spec=VipSpec(id="vip-a", ip=VIP, follow=KEY), since=0.0).to_api(config, 10)
    assert (followed["follow"], followed["follow_value"]) == (KEY, "pg-node-1")
    own = VipRecord(spec=VipSpec(id="vip-b", ip=VIP, follow=KEY, follow_value="db-east"), since=0.0).to_api(config, 10)
    assert own["follow_value"] == "db-east"
    elected = VipRecord(spec=VipSpec(id="vip-c", ip=VIP), since=0.0).to_api(config, 10)
    assert (elected["follow"], elected["follow_value"]) == (None, None)


# ------------------------------------------------------------------ link-client
def test_link_client_add_follow_sends_the_key_and_shows_it(capsys: pytest.CaptureFixture[str], host: str,
                                                           sup: FakeSupervisor) -> None:
    code, out, err = run(capsys, "--host", host, "add", "198.51.100.60", "--follow", KEY, "--follow-value", "pg-1")
    assert (code, err) == (0, "")
    assert sup.requests[-1] == {"op": "add", "ip": VIP, "follow": KEY, "follow_value": "pg-1"}
    assert fields(out)["follows"] == f"{KEY} (this host: pg-1)"
    code, out, err = run(capsys, "--host", host, "add", "198.51.100.61", "--follow", "/link/default/x")
    assert code == EXIT_SERVER and "follow must not be under /link/" in err and out == ""
