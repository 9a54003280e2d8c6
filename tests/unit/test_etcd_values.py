"""Values read from etcd are untrusted: the candidates decoder, how values are shown, logged once."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from link.worker.candidates import BadCandidate, Candidate, decode, encode
from link.etcd.grpc_client import _key_info
from link.etcd.values import OncePerKey, as_name, plain_name, shown

HOSTILE_VALUES = [
    '{"priority":1e400,"state":"STANDBY"}',  # the issue's: float('inf'), int() of it overflowed
    '{"priority":-1e400,"state":"STANDBY"}',
    '{"priority":NaN,"state":"STANDBY"}',
    '{"priority":"nan","state":"STANDBY"}',
    '{"priority":"1","state":"STANDBY"}',
    '{"priority":1.0,"state":"STANDBY"}',
    '{"priority":true,"state":"STANDBY"}',
    '{"priority":' + "9" * 1000 + ',"state":"STANDBY"}',  # a huge integer that fits the length
    '{"priority":' + "9" * 5000 + ',"state":"STANDBY"}',  # longer than int() parses from text
    '{"priority":256,"state":"STANDBY"}',
    '{"priority":-1,"state":"STANDBY"}',
    '{"priority":{"a":1},"state":"STANDBY"}',
    '{"priority":[1],"state":"STANDBY"}',
    '{"priority":1,"state":["STANDBY"]}',  # unhashable: `in` a set would raise TypeError
    '{"priority":1,"state":{"a":1}}',
    '{"priority":1,"state":"HEALTHY"}',
    '{"priority":1}',
    '{"state":"STANDBY"}',
    "[1, 2]",
    '"STANDBY"',
    "1e400",
    "null",
    "",
    "[" * 1000,  # deep nesting: RecursionError in json
    "not json",
    b"\x00\x01\x02garbage",
    b'{"priority":1,"state":"STANDBY\xff"}',  # invalid UTF-8
    b"\xff\xfe",
    '{"priority":1,"state":"STANDBY"}' + " " * 2000,
]


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
def test_a_hostile_value_is_a_bad_candidate_never_another_exception(value):
    with pytest.raises(BadCandidate):
        decode("h2", value)


@pytest.mark.parametrize("host", ["", "a/b", "h\\xff", "h 1", "h\n1", "x" * 300, "\u202eh"])
def test_a_key_that_does_not_end_with_a_host_name_is_a_bad_candidate(host):
    with pytest.raises(BadCandidate):
        decode(host, encode(1, "STANDBY"))


def test_what_link_publishes_decodes_and_newer_members_are_allowed():
    assert decode("h2", encode(7, "ACTIVATED")) == Candidate("h2", 7, "ACTIVATED")
    assert decode("h2", b'{"priority":0,"state":"FAILING","zone":"b"}') == Candidate("h2", 0, "FAILING")
    assert decode("db-1.example.net", encode(255, "STANDBY")).priority == 255


def test_shown_escapes_and_bounds_what_a_log_shows():
    forged = "x\n2026-12-03 WARNING [supervisor] forged line\x1b[31m\u202e"
    text = shown(forged)
    assert "\n" not in text and "\x1b" not in text and "\u202e" not in text and "\\n" in text
    assert shown(b"\xff\x00") == "b'\\xff\\x00'"
    long = shown("a" * 10_000)
    assert len(long) < 120 and "(10000 in all)" in long


def test_a_lock_value_is_shown_as_a_name_only_when_it_is_one():
    assert as_name("h1") == "h1" and plain_name("db-1.example.net")
    assert as_name("evil\nname") == "'evil\\nname'"


def test_invalid_utf8_read_from_etcd_shows_its_bytes():
    kv = SimpleNamespace(value=b"h\xff1", lease=0, mod_revision=7)
    info = _key_info(kv)
    assert info.value == "h\\xff1" and info.lease == 0 and info.mod_revision == 7
    assert not plain_name(info.value)
    info.value.encode()  # no lone surrogate: any log handler or JSON encoder can write it


def test_a_bad_key_is_logged_once_then_again_only_when_it_changes(caplog):
    said = OncePerKey("198.51.100.50/32")
    with caplog.at_level(logging.WARNING, logger="link.etcd.values"):
        assert said.warn("/k", "1e400", "not a candidate")
        assert not said.warn("/k", "1e400", "not a candidate")
        assert said.warn("/k", "2e400", "not a candidate")  # a new value
        said.fine("/k")
        assert said.warn("/k", "2e400", "not a candidate")  # came back after it was good
        said.keep_only(set(), "/")
        assert said.warn("/k", "2e400", "not a candidate")  # came back after it was gone
    assert len(caplog.records) == 4
    assert "198.51.100.50/32: etcd key '/k' = '1e400': not a candidate" in caplog.records[0].getMessage()


def test_remembered_keys_are_bounded():
    said = OncePerKey("vip", limit=3)
    for n in range(10):
        said.warn(f"/k{n}", "v", "bad")
    assert len(said._seen) == 3
