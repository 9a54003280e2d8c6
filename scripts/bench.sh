#!/usr/bin/env bash
# Install (scripts/install.sh: with keepalived, Debian's own Python libraries that the .deb
# runs on, and matplotlib in .venv), then run link's benchmarks against keepalived in the lab:
# failover, scale, API latency. About an hour with the default (full) settings; results in
# benchmarks/results/ (JSON, tables, plots) and BENCHMARKS.md. Arguments go to
# `python -m benchmarks.run` (--quick, --only scale, --agents venv...; --help lists them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh
exec .venv/bin/python -m benchmarks.run "$@" </dev/null
