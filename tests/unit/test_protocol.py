"""link.vocabulary.protocol: every pipe message typed, one encode/decode, one dispatch table, and the
table of docs/ARCHITECTURE.md generated from it."""
from __future__ import annotations

import dataclasses
import pathlib
import pickle
from typing import Any

import pytest

from link.vocabulary import protocol
from link.vocabulary.protocol import Family, ProtocolError
from link.vocabulary.wire_views import HeardPeer

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A value of each field type the protocol uses, to build one of every message.
SAMPLES: dict[str, Any] = {
    "vip_id": "vip-1", "ip": "198.51.100.50/32", "id": 7, "result": [{"id": "vip-1"}], "status": 409,
    "error": "no other host competes", "spec": {"checks": []}, "level": "DEBUG", "priority": 12, "request": 7,
    "state": "ACTIVATED", "since": 1700000000.5, "event": "elected", "holder": "h1", "reason": "took the free lock",
    "previous": "STANDBY", "metrics": {"announce_packets": 3}, "binder_status": {"ok": True},
    "candidates": [{"host": "h1", "priority": 10, "state": "ACTIVATED"}],
    "endpoints": [{"address": "198.51.100.2", "port": 1314}], "holders": [{"host": "h2", "priority": 10, "lock": True}],
    "holder_heard_at": 12.5, "interval": 1.0, "bound": True, "lock": False, "eligible": True,
    "claim": {"mac": "02:00:00:00:0e:0e", "host": None, "since": 1700000000.5, "kind": "arp-announce"},
}


def every_message() -> list[protocol.Message]:
    built = []
    for family in Family:
        for cls in protocol.messages(family):
            values = {f.name: SAMPLES[f.name] for f in dataclasses.fields(cls) if f.name in SAMPLES}
            if cls is protocol.AddIp:
                values["settings"] = {"checks": [], "binder": "arp", "priority": None}
            if cls is protocol.UpdateIp:
                values["settings"] = {"fault_policy": "keep"}
            if cls is protocol.WireView:  # typed items, plain dicts on the pipe
                values["holders"] = (HeardPeer("h2", 10, True),)
                values["candidates"] = (HeardPeer("h3", 12),)
            built.append(cls(**values))
    return built


@pytest.mark.parametrize("message", every_message(), ids=lambda m: f"{m.family.name}-{m.kind}")
def test_every_message_crosses_a_pipe_and_comes_back_equal(message: protocol.Message) -> None:
    wire = pickle.loads(pickle.dumps(protocol.encode(message, 5 if message.family is Family.REQUEST else None)))
    if message.family is Family.REQUEST:
        assert protocol.decode_request(wire) == (5, message)
    else:
        assert protocol.decode(wire, message.family) == message


def test_the_wire_is_what_the_documentation_shows() -> None:
    assert protocol.encode(protocol.AddIp("198.51.100.50/32", {"checks": []}), 3) == {
        "op": "add", "id": 3, "ip": "198.51.100.50/32", "checks": []}
    assert protocol.encode(protocol.StateReport("STANDBY", 1.5, previous="BOOTING"))["from"] == "BOOTING"
    assert protocol.encode(protocol.Refused(3, 404, "not found")) == {"ok": False, "id": 3, "status": 404, "error": "not found"}
    assert protocol.encode(protocol.Stop()) == {"type": "stop"}


def test_fields_left_out_take_their_defaults() -> None:
    report = protocol.decode({"type": "state", "state": "ACTIVATED", "since": 1}, Family.REPORT)
    assert report == protocol.StateReport("ACTIVATED", 1, event=None, holder=None, reason="", previous=None)


@pytest.mark.parametrize("wire, family, words", [
    (None, Family.REPORT, "NoneType, not a message"),
    ({"type": "hello"}, Family.REPORT, "unknown message (type 'hello')"),
    ({"type": "stop"}, Family.REPORT, "unknown message"),  # a command is not a report
    ({"type": "state", "since": 1.0}, Family.REPORT, "'state' is missing"),
    ({"type": "state", "state": "ACTIVATED", "since": "now"}, Family.REPORT, "'since' is 'now'"),
    ({"type": "failover_done", "request": True, "status": 409}, Family.REPORT, "'request' is True"),
    ({"type": "metrics", "metrics": {}, "extra": 1}, Family.REPORT, "unknown field(s) 'extra'"),
    ({"type": "priority", "priority": "3"}, Family.COMMAND, "'priority' is '3'"),
    ({"ok": 1, "id": 1, "result": None}, Family.ANSWER, "unknown message (ok 1)"),
    ({"ok": False, "id": 1, "status": 200, "error": "odd"}, Family.ANSWER, "status 200, not 4xx or 5xx"),
    ({"ok": False, "id": 1}, Family.ANSWER, "'status' is missing"),
    ({"op": "update", "id": 1, "vip_id": "vip-1", "binder": "arp"}, Family.REQUEST, "unknown field(s) 'binder'"),
])
def test_decode_refuses_what_is_not_in_the_protocol(wire: object, family: Family, words: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode(wire, family)
    assert words in str(refused.value)


def test_a_request_that_cannot_be_read_keeps_its_id_for_the_answer() -> None:
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_request({"op": "teleport", "id": 41})
    assert refused.value.request_id == 41 and "'teleport'" in str(refused.value)
    with pytest.raises(ProtocolError) as refused:
        protocol.decode_request({"op": "list"})
    assert refused.value.request_id is None


def test_a_dispatch_table_without_a_handler_for_every_message_is_refused() -> None:
    handlers = {cls: (lambda message, cls=cls: cls) for cls in protocol.messages(Family.COMMAND)}
    dispatch = protocol.Dispatcher(Family.COMMAND, handlers)
    assert dispatch(protocol.Stop()) is protocol.Stop
    del handlers[protocol.HandOver]
    with pytest.raises(TypeError, match="HandOver"):
        protocol.Dispatcher(Family.COMMAND, handlers)


def test_a_message_defined_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="defined twice"):
        @protocol.message(Family.COMMAND, "stop")
        class AnotherStop(protocol.Message):
            pass


def test_the_architecture_documents_table_is_generated_from_the_module() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert protocol.markdown_table() in doc, \
        "docs/ARCHITECTURE.md's message table is stale: regenerate it with python -m link.vocabulary.protocol"
    for cls in (m for family in Family for m in protocol.messages(family)):
        assert (cls.__doc__ or "").split()[0] in protocol.markdown_table()


def test_a_setting_the_protocol_does_not_carry_is_refused_when_built() -> None:
    with pytest.raises(ProtocolError, match="unknown field\\(s\\) 'binder'"):
        protocol.UpdateIp("vip-1", {"binder": "webhook"})


def test_no_repr_shows_a_webhook_secret() -> None:
    webhook = {"url": "https://198.51.100.9/hook", "secret": "s3cr3t-value"}
    for message in (protocol.AddIp("198.51.100.50/32", {"binder": "webhook", "webhook": webhook}),
                    protocol.Settings({"binder": "webhook", "webhook": webhook})):
        assert "s3cr3t" not in repr(message) and "s3cr3t" in str(protocol.encode(message))
