"""The Debian packaging (packaging/debian) agrees with the code and the README (no root needed).

The package itself is built, installed and run by tests/package/test_deb.py (root, Debian).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import link

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "packaging" / "debian"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def readme_variables() -> list[str]:
    """The variables of the README's configuration table (first column, `NAME` cells)."""
    text = _read(REPO / "README.md")
    section = text.split("## Configuration", 1)[1]
    names: list[str] = []
    for line in section.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            break
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names += re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell)
    return names


def config_variables() -> set[str]:
    """Every environment variable link/config.py reads (env.get("X") or a helper's (env, "X"))."""
    source = _read(REPO / "link" / "config.py")
    return set(re.findall(r'env\.get\(\s*"([A-Z][A-Z0-9_]*)"', source)) | set(
        re.findall(r'\(\s*env\s*,\s*"([A-Z][A-Z0-9_]*)"', source)
    )


def default_file_variables() -> dict[str, str]:
    """VARIABLE -> value of each `VARIABLE=value` line of /etc/default/link, commented out or not."""
    found = {}
    for line in _read(DEBIAN / "link.default").splitlines():
        m = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def unit_settings() -> dict[str, list[str]]:
    """link.service as {key: [values]} (a key may appear more than once)."""
    settings: dict[str, list[str]] = {}
    for line in _read(DEBIAN / "link.service").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def one(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key)
    assert values, f"link.service has no {key}="
    assert len(values) == 1, f"link.service sets {key}= {len(values)} times"
    return values[0]


# ---------------------------------------------------------------- version
def test_changelog_version_is_the_package_version():
    first = _read(DEBIAN / "changelog").splitlines()[0]
    m = re.match(r"^link \(([^)]+)\) [a-z-]+; urgency=\w+$", first)
    assert m, f"packaging/debian/changelog: unexpected first line {first!r}"
    assert m.group(1) == link.__version__, (
        f"packaging/debian/changelog is at {m.group(1)} but link/__init__.py says {link.__version__}: "
        "add a changelog entry (dch -v) or fix __version__"
    )


# ---------------------------------------------------------------- /etc/default/link
def test_readme_table_is_parsed():
    names = readme_variables()
    assert {"INTERFACE", "ETCD_HOSTS", "STATE_DIR", "LOGGER_LEVEL", "USER", "PASSWORD"} <= set(names), names


def test_default_file_mentions_every_readme_variable():
    documented = default_file_variables()
    missing = [name for name in readme_variables() if name not in documented]
    assert not missing, f"packaging/debian/link.default (/etc/default/link) lacks {missing} from the README's table"


def test_default_file_mentions_every_variable_the_agent_reads():
    documented = default_file_variables()
    missing = sorted(config_variables() - set(documented))
    assert not missing, f"link/config.py reads {missing}, not in packaging/debian/link.default (/etc/default/link)"


def test_default_file_sets_nothing_and_asks_for_interface_and_etcd():
    text = _read(DEBIAN / "link.default")
    active = [line for line in text.splitlines() if re.match(r"^[A-Z][A-Z0-9_]*=", line)]
    assert not active, f"every setting is commented out (the defaults apply): {active}"
    for name in ("INTERFACE", "ETCD_HOSTS"):
        block = text.split(f"#{name}=", 1)[0].rsplit("\n\n", 1)[-1]
        assert "SET ME" in block, f"the comment above #{name}= says SET ME"


def test_default_values_are_the_agents_defaults():
    from link.config import load

    values = default_file_variables()
    config = load({"INTERFACE": "eth1", "HOSTNAME": "h1", **{k: v for k, v in values.items() if v and k not in ("INTERFACE", "HOSTNAME")}},
                  check_interface=False)
    defaults = load({"INTERFACE": "eth1", "HOSTNAME": "h1"}, check_interface=False)
    assert config == defaults, "the values shown in /etc/default/link are not the agent's defaults"


# ---------------------------------------------------------------- man pages
def test_agent_man_page_documents_every_variable():
    page = _read(DEBIAN / "man" / "link-agent.8")
    missing = [name for name in sorted(set(readme_variables()) | config_variables()) if name not in page]
    assert not missing, f"link-agent.8 does not mention {missing}"


def test_agent_man_page_documents_every_option_and_signal():
    import contextlib
    import io

    from link.agent.link_agent import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", out.getvalue()))
    signals = set(re.findall(r"\b(SIG[A-Z0-9]+)\b", out.getvalue()))
    page = _read(DEBIAN / "man" / "link-agent.8").replace("\\-", "-")
    missing = sorted(w for w in options | signals if w not in page)
    assert not missing, f"link-agent.8 does not mention {missing} (see link-agent --help)"


def test_man_pages_carry_the_version():
    for page in ("link-agent.8", "link-client.1"):
        head = _read(DEBIAN / "man" / page).splitlines()[0]
        assert f'"link {link.__version__}"' in head, f"{page}: .TH should name link {link.__version__}: {head}"


def test_client_man_page_documents_every_command_and_option():
    import argparse

    from link.cli.link_client import build_parser

    page = _read(DEBIAN / "man" / "link-client.1").replace("\\-", "-")
    words = {"LINK_HOST", "LINK_USER", "LINK_PASSWORD"}
    parsers = [build_parser()]
    for action in parsers[0]._actions:
        if isinstance(action, argparse._SubParsersAction):
            words |= set(action.choices)  # every command and alias
            parsers += list(action.choices.values())
    for parser in parsers:
        words |= {opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")}
    missing = sorted(w for w in words if w not in page)
    assert not missing, f"link-client.1 does not mention {missing} (see link-client --help)"


# ---------------------------------------------------------------- the systemd unit
def test_unit_runs_the_agent_with_its_configuration():
    s = unit_settings()
    assert one(s, "ExecStart") in ("/usr/bin/link-agent", "/usr/bin/link-agent --env-file /etc/default/link")
    if "--env-file" in one(s, "ExecStart"):  # the agent rereads it on SIGHUP: `systemctl reload link`
        assert one(s, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(s, "EnvironmentFile") == "/etc/default/link"
    assert one(s, "Restart") == "on-failure"
    assert one(s, "StateDirectory") == "link"  # /var/lib/link, the default STATE_DIR
    assert one(s, "WantedBy") == "multi-user.target"


def test_unit_is_type_notify_with_a_watchdog_the_supervisor_feeds():
    from link.supervisor.systemd import READY_BOUND

    s = unit_settings()
    assert one(s, "Type") == "notify"
    assert one(s, "NotifyAccess") == "main"  # the supervisor only: its children are given no NOTIFY_SOCKET
    m = re.fullmatch(r"(\d+)s?", one(s, "WatchdogSec"))
    assert m and int(m.group(1)) >= 10, "WatchdogSec in seconds, long enough for a busy loop turn"
    # READY comes by READY_BOUND at the latest: before systemd gives up on the start (90 s default).
    start = re.fullmatch(r"(\d+)s?", (s.get("TimeoutStartSec") or ["90"])[0])
    assert start and READY_BOUND < int(start.group(1))


def test_unit_stop_lets_the_supervisor_hand_the_vips_over():
    from link.supervisor.arbiter import STOP_TIMEOUT

    s = unit_settings()
    # SIGTERM to the supervisor only: it tells each worker to release, then exits.
    assert one(s, "KillMode") == "mixed"
    assert one(s, "KillSignal") in ("SIGTERM", "TERM", "15")
    m = re.fullmatch(r"(\d+)s?", one(s, "TimeoutStopSec"))
    assert m, "TimeoutStopSec in seconds"
    assert int(m.group(1)) > STOP_TIMEOUT + 2, f"TimeoutStopSec must leave the agent its own {STOP_TIMEOUT:g}s stop timeout"


def test_unit_capabilities_and_sandbox():
    s = unit_settings()
    caps = {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert set(one(s, "AmbientCapabilities").split()) == caps
    assert set(one(s, "CapabilityBoundingSet").split()) == caps
    assert one(s, "User") == "link"
    assert set(one(s, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "LockPersonality": "yes"}.items():
        assert one(s, key) == value, f"{key}={value}"


def test_service_is_neither_enabled_nor_started_on_install():
    rules = _read(DEBIAN / "rules")
    line = next((l for l in rules.splitlines() if l.strip().startswith("dh_installsystemd")), "")
    for flag in ("--no-enable", "--no-start", "--restart-after-upgrade"):
        assert flag in line, f"debian/rules: dh_installsystemd {flag}"


# ---------------------------------------------------------------- dependencies
_DEBIAN_NAME = {"etcd3": "python3-etcd3", "protobuf": "python3-protobuf", "grpcio": "python3-grpcio",
                "prometheus-client": "python3-prometheus-client", "prometheus_client": "python3-prometheus-client"}


def _install_requires() -> dict[str, str]:
    tree = ast.parse(_read(REPO / "setup.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            reqs = [ast.literal_eval(e) for e in node.value.elts]  # type: ignore[attr-defined]
            break
    else:
        pytest.fail("setup.py has no install_requires")
    out = {}
    for req in reqs:
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9.]+))?", req)
        assert m, req
        out[m.group(1).lower()] = m.group(2) or ""
    return out


def _control_depends() -> dict[str, str]:
    control = _read(DEBIAN / "control")
    stanza = control.split("\nPackage: link\n", 1)[1]
    field = re.search(r"^Depends:(.*?)(?=^\S)", stanza, re.S | re.M)
    assert field, "debian/control: no Depends for link"
    deps = {}
    for item in field.group(1).split(","):
        item = item.strip()
        if not item or item.startswith("$"):
            continue
        m = re.match(r"^([a-z0-9.+-]+)(?:\s*\(>=\s*([^)]+)\))?$", item)
        assert m, f"debian/control Depends: {item!r}"
        deps[m.group(1)] = (m.group(2) or "").strip()
    return deps


def test_every_python_requirement_is_a_debian_dependency_with_the_same_lower_bound():
    deps = _control_depends()
    for name, low in _install_requires().items():
        package = _DEBIAN_NAME.get(name, f"python3-{name}")
        assert package in deps, f"setup.py requires {name}: debian/control should depend on {package}"
        assert deps[package] == low, f"{package}: setup.py says >= {low or '(none)'}, debian/control (>= {deps[package] or 'none'})"
