#!/usr/bin/env bash
# Install (scripts/install.sh), then show a VIP moving between three hosts of a namespace lab:
# election, the client's ARP table, a holder killed, a SIGTERM hand-over. Under a minute;
# exits non-zero if the VIP did not move. Everything it creates is removed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh
exec .venv/bin/python -m tests.lab.demo "$@" </dev/null
