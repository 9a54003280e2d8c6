"""Which Python libraries the agents under test run on.

`debian`: /usr/bin/python3 with Debian 12's own python3-etcd3, -grpcio, -protobuf, -pyroute2,
-scapy... — what the .deb runs on, so what users of the package get. `venv`: the
virtualenv's PyPI versions (grpcio 1.8x, pure-Python protobuf 3.20), what developers run.
They differ (gRPC's C core above all), so every figure says which it was measured on.
The lab starts agents with the interpreter LINK_AGENT_PYTHON names (tests/lab: agent_command).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Iterator

DEBIAN_PYTHON = "/usr/bin/python3"
RUNTIMES = ("debian", "venv")
_LIBRARIES = {"grpc": "grpcio", "etcd3": "etcd3", "google.protobuf": "protobuf", "pyroute2": "pyroute2",
              "scapy": "scapy", "bottle": "bottle", "waitress": "waitress"}


def python_of(runtime: str) -> str:
    return DEBIAN_PYTHON if runtime == "debian" else sys.executable


@contextlib.contextmanager
def agents_on(runtime: str) -> Iterator[None]:
    """Agents started in the body run this checkout on `runtime`'s libraries (also for the
    venv: its console script would run whatever checkout it was installed from)."""
    before = os.environ.get("LINK_AGENT_PYTHON")
    os.environ["LINK_AGENT_PYTHON"] = python_of(runtime)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LINK_AGENT_PYTHON", None)
        else:
            os.environ["LINK_AGENT_PYTHON"] = before


def describe(runtime: str) -> dict[str, str]:
    """The interpreter and library versions of `runtime` (or why they cannot be read)."""
    script = ("import importlib, importlib.metadata as md, json, platform, sys\n"
              f"mods = {_LIBRARIES!r}\n"
              "out = {'python': platform.python_version()}\n"
              "for mod, name in mods.items():\n"
              "    try:\n"
              "        m = importlib.import_module(mod)\n"
              "    except Exception as exc:\n"
              "        out[name] = 'missing: %s' % exc\n"
              "        continue\n"
              "    try:\n"
              "        out[name] = md.version(name)\n"
              "    except md.PackageNotFoundError:\n"
              "        out[name] = getattr(m, '__version__', 'installed')\n"
              "from google.protobuf.internal import api_implementation\n"
              "out['protobuf_implementation'] = api_implementation.Type()\n"
              "print(json.dumps(out))\n")
    try:
        done = subprocess.run([python_of(runtime), "-s", "-c", script], capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr.strip()[-300:]}
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        return {"error": str(exc)}


def unavailable(runtime: str) -> str | None:
    """None when agents can run on `runtime`, else why not."""
    info = describe(runtime)
    if "error" in info:
        return f"{runtime}: {info['error']}"
    missing = [k for k, v in info.items() if str(v).startswith("missing")]
    return f"{runtime}: missing {', '.join(missing)}" if missing else None
