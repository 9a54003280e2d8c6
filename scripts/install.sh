#!/usr/bin/env bash
# Install link and what its lab needs, as root on Debian 12: Debian packages, then the
# virtualenv .venv (in the repository) with link installed editable plus its test tools.
# Idempotent: a second run only checks. Quiet, but a failing step prints its log and exits non-zero.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/apt-packages.sh

# keepalived is the benchmarks' reference (their smoke test is in the suite); Debian's own
# Python libraries are what the .deb runs on, and what the benchmarks run agents on; prometheus
# gives promtool (the shipped alerting rules' unit tests) and the server the lab test runs;
# patroni and postgresql (with psql) are the real Patroni the leader-key lab test follows.
packages=(etcd-server etcd-client iproute2 tcpdump iputils-ping procps openssl python3 python3-venv keepalived
          prometheus patroni postgresql postgresql-client "${DEBIAN_PYTHON_LIBS[@]}")
log=$(mktemp -t link-install.XXXXXX)
trap 'rm -f "$log"' EXIT

step() {  # step "what" command...: run quietly, show the log if it fails
  local what=$1; shift
  if ! "$@" >"$log" 2>&1; then
    echo "install.sh: FAILED: $what" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
}

if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

apt_install_missing install.sh "${packages[@]}"
for tool in /usr/bin/etcd ip tcpdump ping ps python3 /usr/bin/promtool /usr/bin/prometheus /usr/bin/patroni \
            /usr/lib/postgresql/15/bin/postgres /usr/bin/psql setpriv; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is missing after the install" >&2; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
  echo "install.sh: python3 -m venv .venv"
  step "python3 -m venv .venv" python3 -m venv .venv
fi
# pip only when setup.py changed since the last successful install (or never ran).
stamp=.venv/.link-install-stamp
want=$(sha256sum setup.py | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import link, pytest, etcd3" >/dev/null 2>&1; then
  echo "install.sh: pip install -e '.[test]' into .venv"
  step "pip install -e '.[test]'" .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[test]'
  echo "$want" >"$stamp"
fi
step "import check" .venv/bin/python -c "import link, link.config, pytest, etcd3, pyroute2, scapy, psutil, prometheus_client, matplotlib, mypy"
[ -x .venv/bin/link-agent ] || { echo "install.sh: .venv/bin/link-agent is missing" >&2; exit 1; }
