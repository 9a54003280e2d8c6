"""Each binder kind owns its settings schema (link.vocabulary.binder_kinds), and the VIP's
fields are defined once (VipSpec's field metadata): validation, the API's view, the pipe
protocol, the state file, the security checks and the binder implementations read them, and
the documents (README, link/api/openapi.json) are checked against them (issue 16, point 6)."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import sys
from typing import Any, Iterator

import pytest

from link.api import validation
from link.api.admission import check_webhook_allowed
from link.api.app import openapi_document
from link.api.validation import ApiError, parse_add_body, parse_update_body
from link.scripts import named_programs
from link.vocabulary import binder_kinds, protocol
from link.vocabulary.binder_kinds import (HttpUrl, Program, Seconds, Secret, BinderKind, SECRET_MASK)
from link.vocabulary.vip import BINDER_SETTINGS, ROLE, Role, VipSpec, setting_names
from link.worker import binders
from link.worker.binders import implementation, implementations, make_binder
from tests.unit.test_binders import VIP, VIP_ID, body, refused

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "a-toy-token-0123456789"

# A binder kind no module of link knows: a program, a URL it calls, a secret, a duration.
TOY = BinderKind("toy", (
    Program("run", required=True, needed="the program to run"),
    HttpUrl("notify", max_length=100),
    Secret("token", required=True, needed="the toy's token", min_length=20, max_length=40),
    Seconds("pause", default=2.0, low=1.0, high=9.0),
))


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[BinderKind]:
    """TOY registered as a binder kind for one test: its schema entry, and nothing else."""
    monkeypatch.setitem(binder_kinds.KINDS, TOY.name, TOY)
    yield TOY


# ------------------------------------------------------------------- a kind is its schema entry
def test_a_registered_kind_is_validated_from_its_schema_alone(toy: BinderKind) -> None:
    got = parse_add_body(body(binder="toy", toy={"run": ["/etc/link/scripts/toy"], "token": TOKEN}))
    assert got == {"ip": VIP, "binder": "toy", "toy": {"run": ["/etc/link/scripts/toy"], "notify": None, "token": TOKEN,
                                                       "pause": 2.0}}
    for fields, words in [
        ({"binder": "toy"}, 'toy is required with "binder": "toy": {"run": [...], "token": "..."}'),
        ({"binder": "toy", "toy": {"token": TOKEN}}, "toy.run is required: the program to run"),
        ({"binder": "toy", "toy": {"run": ["toy"], "token": TOKEN}}, "toy.run[0] must be an absolute path"),
        ({"binder": "toy", "toy": {"run": ["/x"], "token": "short"}}, "toy.token must be 20 to 40 printable characters"),
        ({"binder": "toy", "toy": {"run": ["/x"], "token": TOKEN, "pause": 10}},
         "toy.pause must be between 1 and 9 seconds (default 2)"),
        ({"binder": "toy", "toy": {"run": ["/x"], "token": TOKEN, "notify": "ftp://198.51.100.9/"}},
         "toy.notify must be an http:// or https:// URL"),
        ({"binder": "toy", "toy": {"run": ["/x"], "token": TOKEN, "loud": True}},
         "unknown field toy.'loud' (toy takes run, notify, token, pause)"),
        ({"binder": "arp", "toy": {}}, 'toy is only used with "binder": "toy" (binder is arp)'),
        ({"binder": "bgp"}, "binder must be one of arp, command, webhook, toy, not 'bgp'"),
        ({"tyo": 1}, "unknown field 'tyo' (a new IP takes ip, checks, healthchecks, healthcheck_interval, "
                     "fault_policy, priority, preempt, notify, follow, follow_value, binder, command, webhook, toy)"),
    ]:
        message = refused(body(**fields))
        assert words in message, (fields, message)
        assert TOKEN not in message


def test_a_registered_kind_is_carried_stored_and_shown_with_its_secret_masked(toy: BinderKind) -> None:
    request = parse_add_body(body(binder="toy", toy={"run": ["/x"], "notify": "https://198.51.100.9/t", "token": TOKEN}))
    # Through the pipe: the protocol's add carries the kind's settings.
    wire = protocol.encode(protocol.AddIp(ip=request["ip"], settings={k: v for k, v in request.items() if k != "ip"}), 7)
    _, decoded = protocol.decode_request(wire)
    assert isinstance(decoded, protocol.AddIp) and decoded.settings["toy"]["token"] == TOKEN
    # Into the spec (as the supervisor builds it), the state file's form and back.
    spec = VipSpec.from_json({**decoded.settings, "id": VIP_ID, "ip": decoded.ip})
    assert spec.binder == "toy" and spec.binder_settings == request["toy"]
    assert VipSpec.from_json(spec.to_json()) == spec and spec.to_json()["toy"] == request["toy"]
    # Shown by the API with its secret masked, and never in a repr.
    assert spec.public_binder() == {"binder": "toy", "toy": {**request["toy"], "token": SECRET_MASK}}
    assert TOKEN not in repr(spec) and TOKEN not in repr(decoded)
    # Its program is checked against SCRIPTS_DIR, its URL against WEBHOOK_ALLOWED_URLS.
    assert named_programs(spec.to_json()) == [("toy.run[0]", "/x")]
    with pytest.raises(ApiError, match=r"toy\.notify: https://198.51.100.9:443 is not on WEBHOOK_ALLOWED_URLS"):
        check_webhook_allowed(request, ("https://hooks.example.net:443",))
    check_webhook_allowed(request, ("https://198.51.100.9:443",))


def test_the_documents_checks_name_a_kind_that_is_not_documented(toy: BinderKind) -> None:
    assert drift(openapi_document(), readme()) == [
        "openapi: NewIP.binder lists ['arp', 'command', 'webhook'], not ['arp', 'command', 'webhook', 'toy']",
        "openapi: IP.binder lists ['arp', 'command', 'webhook'], not ['arp', 'command', 'webhook', 'toy']",
        "openapi: no NewIP.toy", "openapi: no schema ToyBinder", "README: no row for `toy` in the binder table",
        "README: no bullet for `toy`",
    ]


TOY_MODULE = """
from link.vocabulary.binder_kinds import KINDS


class ToyBinder:
    kind = "toy"

    def __init__(self, settings):
        self.settings = settings

    @classmethod
    def from_spec(cls, config, spec, wake, priority):
        return cls(KINDS["toy"].values(spec.binder_settings))
"""


def test_a_kind_s_implementation_is_its_module_alone(toy: BinderKind, tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # toy.py in a folder of link.worker.binders' package path: no registry line anywhere.
    (tmp_path / "toy.py").write_text(TOY_MODULE, encoding="utf-8")
    monkeypatch.setattr(binders, "__path__", [*binders.__path__, str(tmp_path)])
    request = parse_add_body(body(binder="toy", toy={"run": ["/x"], "token": TOKEN}))
    spec = VipSpec.from_json({**request, "id": VIP_ID})
    from link.config import load
    try:
        made = make_binder(load({"INTERFACE": "lo", "HOSTNAME": "h1"}), spec, lambda: None, lambda: 10)
        assert type(made).__name__ == "ToyBinder" and type(made).__module__ == "link.worker.binders.toy"
        assert made.settings["pause"] == 2.0 and made.settings["token"] == TOKEN  # type: ignore[attr-defined]
        assert list(implementations()) == ["arp", "command", "webhook", "toy"]
    finally:
        sys.modules.pop("link.worker.binders.toy", None)  # the next test's toy is its own


def test_a_kind_without_its_module_or_with_two_classes_is_named() -> None:
    with pytest.raises(ModuleNotFoundError, match="link.worker.binders.nosuch"):
        implementation("nosuch")
    with pytest.raises(LookupError, match=r"link\.worker\.binders\.runner declares 0 classes with kind = 'runner'"):
        implementation("runner")


# ------------------------------------------------------------------------ the real kinds
def test_every_kind_has_an_implementation_and_every_implementation_a_kind() -> None:
    assert list(implementations()) == list(binder_kinds.KINDS)
    for kind, cls in implementations().items():
        assert cls.kind == kind and callable(cls.from_spec)


def test_a_binder_reads_its_defaults_from_the_schema() -> None:
    from link.config import load
    from link.worker.binders.command import CommandBinder
    from link.worker.binders.webhook import WebhookBinder

    config = load({"INTERFACE": "lo", "HOSTNAME": "h1"})
    stored = {"activate": ["/bin/true"], "deactivate": ["/bin/true"]}  # the optional settings left out
    command = CommandBinder(config, VipSpec(VIP_ID, VIP, binder="command", binder_settings=stored), lambda: None, lambda: 10)
    webhook = WebhookBinder(config, VipSpec(VIP_ID, VIP, binder="webhook",
                                            binder_settings={"url": "http://127.0.0.1:9/", "secret": TOKEN}), lambda: None)
    try:
        # The schema's defaults (which the README must state: the drift check below).
        default = {(kind.name, s.name): s.default for kind in (binder_kinds.COMMAND, binder_kinds.WEBHOOK)
                   for s in kind.settings if isinstance(s, Seconds)}
        assert (command.timeout, command.ensure_interval, webhook.timeout) == (
            default["command", "timeout"], default["command", "ensure_interval"], default["webhook", "timeout"])
        assert command.argv == {"activate": ["/bin/true"], "deactivate": ["/bin/true"]}  # no ensure: none run
    finally:
        command.close(0.5)
        webhook.close(0.5)


def test_missing_required_settings_are_named_before_other_faults() -> None:
    # The one order every kind follows: shape, unknown fields, missing required ones, then each value.
    message = refused(body(binder="command", command={"activate": ["relative"]}))
    assert message == "command.deactivate is required: the program to run on deactivate"


# ------------------------------------------------------------------------ the VIP's fields
def test_every_vipspec_field_is_an_identity_or_a_setting_and_the_lists_follow_them() -> None:
    roles = {f.name: f.metadata[ROLE] for f in dataclasses.fields(VipSpec)}
    assert set(roles.values()) <= set(Role)
    assert [name for name, role in roles.items() if role is Role.IDENTITY] == ["id", "ip"]
    on_update = [name for name, role in roles.items() if role is Role.ON_ADD_AND_UPDATE]
    assert setting_names(update=True) == tuple(on_update)
    on_add = [name for name, role in roles.items() if role is not Role.IDENTITY and name != BINDER_SETTINGS]
    assert setting_names() == (*on_add, *binder_kinds.settings_fields())
    # The pipe protocol and the API read the same lists.
    assert tuple(protocol.ADD_SETTINGS) == setting_names() and tuple(protocol.UPDATE_SETTINGS) == setting_names(update=True)
    spread = {cls: next(f for f in dataclasses.fields(cls) if protocol.SPREAD in f.metadata).metadata[protocol.SPREAD]
              for cls in (protocol.AddIp, protocol.UpdateIp)}
    assert tuple(spread[protocol.AddIp]) == setting_names() and tuple(spread[protocol.UpdateIp]) == setting_names(update=True)
    # Every setting PATCH changes has its reader in the API (checks have theirs, with their alias).
    assert set(setting_names(update=True)) - {"checks"} == set(validation._READERS)


def test_the_json_form_and_the_api_messages_follow_the_fields_order() -> None:
    assert parse_update_body(b'{"priority": 3, "preempt": null}') == {"priority": 3, "preempt": None}
    with pytest.raises(ApiError, match="an update takes checks, healthchecks, healthcheck_interval, fault_policy, "
                                       "priority, preempt"):
        parse_update_body(b'{"binder": "arp"}')
    full = VipSpec(VIP_ID, VIP, priority=3, preempt=False, fault_policy="keep", healthcheck_interval=2.0,
                   checks=({"type": "TCP", "host": "198.51.100.20", "port": 5432},))
    assert list(full.to_json()) == ["id", "ip", *setting_names(update=True), "follow", "follow_value", "binder"]
    assert VipSpec.from_json(full.to_json()) == full
    assert VipSpec.from_json({"id": VIP_ID, "ip": VIP}) == VipSpec(VIP_ID, VIP)  # an old file's entry: defaults


# ------------------------------------------------------------------------ the documents
def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _binder_section(text: str) -> str:
    start = text.index("### Binders: how a VIP is put in place")
    return text[start:text.index("\n##", start + 10)]


def drift(document: Any, readme_text: str) -> list[str]:
    """Where link/api/openapi.json and the README's binder section disagree with the kinds'
    schemas (link.vocabulary.binder_kinds); [] when they agree."""
    kinds = list(binder_kinds.KINDS.values())
    schemas = document["components"]["schemas"]
    found: list[str] = []
    for where in ("NewIP", "IP"):
        listed = schemas[where]["properties"]["binder"]["enum"]
        if listed != [k.name for k in kinds]:
            found.append(f"openapi: {where}.binder lists {listed}, not {[k.name for k in kinds]}")
    for kind in (k for k in kinds if k.settings):
        if kind.name not in schemas["NewIP"]["properties"]:
            found.append(f"openapi: no NewIP.{kind.name}")
        schema = schemas.get(f"{kind.name.capitalize()}Binder")
        if schema is None:
            found.append(f"openapi: no schema {kind.name.capitalize()}Binder")
            continue
        found += [f"openapi: {kind.name}: {fault}" for fault in _schema_drift(kind, schema)]
        shown = schemas["IP"]["properties"][kind.name]["$ref"].rsplit("/", 1)[1]
        for setting in kind.settings:
            if setting.secret and schemas[shown]["properties"][setting.name].get("enum") != [SECRET_MASK]:
                found.append(f"openapi: {shown}.{setting.name} is not shown as {SECRET_MASK}")
    section = _binder_section(readme_text)
    rows = re.findall(r"^\| `(\w+)`", section, re.M)
    for kind in kinds:
        if kind.name not in rows:
            found.append(f"README: no row for `{kind.name}` in the binder table")
    for kind in (k for k in kinds if k.settings):
        bullet = re.search(rf"^\* `{kind.name}`:(.*?)(?=^\* |\Z)", section, re.M | re.S)
        if bullet is None:
            found.append(f"README: no bullet for `{kind.name}`")
            continue
        text = " ".join(bullet.group(1).split())
        for setting in kind.settings:
            facts = [f"`{setting.name}`"]
            if isinstance(setting, Seconds):
                facts.append(f"default {setting.default:g} s, {setting.low:g}–{setting.high:g}")
            if isinstance(setting, Secret):
                facts.append(f"{setting.min_length}–{setting.max_length} characters")
            found += [f"README: `{kind.name}` says nothing of {fact}" for fact in facts if fact not in text]
    return found


def _schema_drift(kind: BinderKind, schema: dict[str, Any]) -> list[str]:
    faults = []
    if list(schema["properties"]) != list(kind.names()):
        faults.append(f"properties {list(schema['properties'])}, not {list(kind.names())}")
    if schema.get("required", []) != [s.name for s in kind.settings if s.required]:
        faults.append(f"required {schema.get('required')}")
    if schema.get("additionalProperties") is not False:
        faults.append("takes other properties")
    for setting in kind.settings:
        spec = schema["properties"].get(setting.name, {})
        if isinstance(setting, Seconds):
            expected = {"minimum": setting.low, "maximum": setting.high, "default": setting.default}
        elif isinstance(setting, Program):
            expected = {"maxItems": Program.MAX_ARGS, "minItems": 1}
            if spec.get("items", {}).get("maxLength") != Program.MAX_ARG_LENGTH:
                faults.append(f"{setting.name}: items' maxLength is not {Program.MAX_ARG_LENGTH}")
        elif isinstance(setting, Secret):
            expected = {"minLength": setting.min_length, "maxLength": setting.max_length}
        elif isinstance(setting, HttpUrl):
            expected = {"maxLength": setting.max_length}
        else:
            expected = {}
        faults += [f"{setting.name}.{key} is {spec.get(key)!r}, not {value!r}" for key, value in expected.items()
                   if spec.get(key) != value]
    return faults


def test_the_openapi_document_and_the_readme_agree_with_the_kinds_schemas() -> None:
    assert drift(openapi_document(), readme()) == []


def test_the_openapi_bodies_take_the_fields_the_api_takes() -> None:
    schemas = openapi_document()["components"]["schemas"]
    # LinK's Go client also sends `id` (empty) and `keepalive_interval` (0) in a new IP.
    assert set(schemas["NewIP"]["properties"]) == {*validation._add_fields(), "id", "keepalive_interval"}
    assert set(schemas["IPUpdate"]["properties"]) == set(validation._update_fields())


def test_the_drift_check_sees_a_changed_bound_and_a_changed_default() -> None:
    document = json.loads(json.dumps(openapi_document()))
    document["components"]["schemas"]["CommandBinder"]["properties"]["timeout"]["maximum"] = 900
    text = readme().replace("(default 5 s, 0.1–60)", "(default 6 s, 0.1–60)")
    assert drift(document, text) == ["openapi: command: timeout.maximum is 900, not 600.0",
                                     "README: `webhook` says nothing of default 5 s, 0.1–60"]
