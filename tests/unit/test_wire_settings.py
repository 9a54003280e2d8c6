"""WIRE_* settings: checked at start in LinK's style (one line naming the variable, exit 2)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from link.config import ConfigError, load

BASE = {"INTERFACE": "lo", "HOSTNAME": "h1"}


def config(**env: str):
    return load({**BASE, **env}, check_interface=False)


def test_defaults() -> None:
    c = config()
    assert (c.fault_policy, c.wire_port, c.wire_interval, c.wire_peers, c.wire_key_file, c.wire_address) == (
        "arbitrate", 1314, 0.8, (), "", "")


def test_good_values(tmp_path: Path) -> None:
    key = tmp_path / "wire.key"
    key.write_bytes(b"  0123456789abcdef0123\n")
    key.chmod(0o600)
    c = config(WIRE_PORT="4000", WIRE_INTERVAL="500ms", WIRE_PEERS="198.51.100.2, [2001:db8::3]:4001,198.51.100.2",
               WIRE_KEY_FILE=str(key), WIRE_ADDRESS="2001:DB8::1")
    assert (c.wire_port, c.wire_interval, c.wire_address) == (4000, 0.5, "2001:db8::1")
    assert [str(p) for p in c.wire_peers] == ["198.51.100.2:4000", "[2001:db8::3]:4001"]
    assert "0123456789abcdef" not in repr(c)  # the key is read by the supervisor, never kept in the config


@pytest.mark.parametrize("env, words", [
    ({"WIRE_PORT": "0"}, "WIRE_PORT=0 is out of range"),
    ({"WIRE_PORT": "udp"}, "WIRE_PORT='udp' is not a whole number"),
    ({"WIRE_INTERVAL": "0.01"}, "WIRE_INTERVAL='0.01' is out of range"),
    ({"WIRE_INTERVAL": "soon"}, "WIRE_INTERVAL='soon' is not a duration"),
    ({"WIRE_PEERS": "198.51.100.2,peer.example"}, "WIRE_PEERS entry 'peer.example'"),
    ({"WIRE_PEERS": "198.51.100.2:70000"}, "WIRE_PEERS entry '198.51.100.2:70000'"),
    ({"WIRE_ADDRESS": "eth1"}, "WIRE_ADDRESS='eth1' is not an IPv4 or IPv6 address"),
    ({"WIRE_KEY_FILE": "/nonexistent/wire.key"}, "WIRE_KEY_FILE='/nonexistent/wire.key' cannot be read"),
    ({"FAULT_POLICY": "vote"}, "FAULT_POLICY='vote' is not one of arbitrate, activate, keep, release"),
])
def test_bad_values_are_one_line_naming_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        config(**env)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_key_file_others_can_read_or_too_short_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "wire.key"
    key.write_bytes(b"0123456789abcdef0123")
    for mode in (0o644, 0o660, 0o604):
        key.chmod(mode)
        with pytest.raises(ConfigError, match="readable or writable by others"):
            config(WIRE_KEY_FILE=str(key))
    key.chmod(0o640)  # root:link 0640, as the package's TLS keys
    assert config(WIRE_KEY_FILE=str(key)).wire_key_file == str(key)
    key.chmod(0o600)
    key.write_bytes(b"short")
    with pytest.raises(ConfigError, match="holds 5 bytes") as raised:
        config(WIRE_KEY_FILE=str(key))
    assert "short" not in str(raised.value)  # never the key itself
    with pytest.raises(ConfigError, match="not a regular file"):
        config(WIRE_KEY_FILE=str(tmp_path))


def test_the_agent_exits_2_with_one_line() -> None:
    env = {**os.environ, **BASE, "WIRE_PEERS": "nowhere"}
    done = subprocess.run([sys.executable, "-m", "link.agent.link_agent"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["link-agent: WIRE_PEERS entry 'nowhere' is not an address[:port] such as "
                                                "198.51.100.2 or [2001:db8::2]:1314"]


def test_the_agent_exits_2_with_one_line_when_the_wire_port_is_taken(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    taken.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    taken.bind(("::", 0))
    port = taken.getsockname()[1]
    try:
        env = {**os.environ, **BASE, "STATE_DIR": str(tmp_path), "WIRE_PORT": str(port)}
        done = subprocess.run([sys.executable, "-m", "link.agent.link_agent"], env=env, capture_output=True, text=True,
                              timeout=60)
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"link-agent: cannot listen for heartbeats on UDP port {port} "
                                                   "(WIRE_PORT): Address already in use")


def test_a_hostname_the_heartbeat_cannot_carry_is_refused_at_start() -> None:
    assert config(HOSTNAME="h" * 253).hostname == "h" * 253
    for bad in ("h" * 254, "h1\x07"):
        with pytest.raises(ConfigError, match="must be printable and at most 253 bytes"):
            config(HOSTNAME=bad)
