#!/usr/bin/env bash
# The test suite on Debian 12's own Python and libraries, the ones the .deb depends on
# (python3-etcd3 0.12, python3-grpcio 1.51, python3-protobuf 3.21, python3-pyroute2 0.7,
# python3-scapy 2.5, python3-bottle 0.12, python3-waitress 2.1, python3-prometheus-client
# 0.16...), not the virtualenv's PyPI versions. As root on Debian 12 (it apt-get installs them):
#
#   bash scripts/test-debian-libs.sh               the unit tests, /usr/bin/python3
#   bash scripts/test-debian-libs.sh --lab         then the lab tests (tests/integration) too
#   bash scripts/test-debian-libs.sh -- -k config  extra arguments go to pytest
#
# The lab starts agents with the `link-agent` found next to the test's interpreter
# (tests/lab: agent_command), so --lab runs pytest from an empty virtualenv made with
# --system-site-packages --without-pip: Debian's interpreter and Debian's libraries, nothing
# from PyPI, and a `link-agent` there that runs this checkout (not an installed package).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
. scripts/apt-packages.sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 PYTHONNOUSERSITE=1
unset PYTHONHOME PYTHONPATH VIRTUAL_ENV

lab=0
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --lab) lab=1 ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1") ;;
  esac
  shift
done

die() { echo "test-debian-libs.sh: $*" >&2; exit 1; }

# python3-yaml and prometheus (promtool): the tests of the shipped Prometheus rules.
packages=("${DEBIAN_PYTHON_LIBS[@]}" python3-pytest python3-yaml prometheus)
if [ "$lab" = 1 ]; then
  packages+=(python3-venv etcd-server iproute2 tcpdump iputils-ping procps)
fi
apt_install_missing test-debian-libs.sh "${packages[@]}"

# Each library must be Debian's (/usr/lib/python3/dist-packages), not a pip install in
# /usr/local or ~/.local that would shadow it.
/usr/bin/python3 - <<'PY'
import importlib, sys
mods = {"etcd3": "python3-etcd3", "grpc": "python3-grpcio", "google.protobuf": "python3-protobuf",
        "pyroute2": "python3-pyroute2", "scapy": "python3-scapy", "bottle": "python3-bottle",
        "waitress": "python3-waitress", "setproctitle": "python3-setproctitle", "psutil": "python3-psutil",
        "prometheus_client": "python3-prometheus-client", "pytest": "python3-pytest"}
import subprocess
bad = []
line = []
for mod, pkg in mods.items():
    m = importlib.import_module(mod)
    path = m.__file__ or ""
    if not path.startswith("/usr/lib/python3/dist-packages/"):
        bad.append(f"{mod} comes from {path}, not from the Debian package {pkg}")
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True).stdout
    line.append(f"{pkg.removeprefix('python3-')} {version}")
print(f"test-debian-libs.sh: Python {sys.version.split()[0]} ({sys.executable}); " + ", ".join(line))
if bad:
    sys.exit("test-debian-libs.sh: " + "; ".join(bad))
PY

status() {  # pytest's exit code, with 5 (no test collected) counted as a failure
  case $1 in
    0) ;;
    5) echo "test-debian-libs.sh: pytest collected no tests: that is a failure" >&2 ;;
    *) echo "test-debian-libs.sh: pytest exited with $1" >&2 ;;
  esac
}

# Test tools that Debian 12 does not package (schemathesis, jsonschema_rs: PyPI only): their tests are left
# out here, and said so; the virtualenv run (scripts/test.sh) has them.
unit_args=()
if ! /usr/bin/python3 -c "import schemathesis" 2>/dev/null; then
  fuzz=tests/unit/test_api_schema.py::test_fuzzed_requests_get_no_5xx_and_answers_that_match_the_document
  echo "test-debian-libs.sh: schemathesis is not a Debian 12 package: deselecting $fuzz"
  unit_args+=(--deselect "$fuzz")
fi
if ! /usr/bin/python3 -c "import jsonschema_rs" 2>/dev/null; then
  wire_schema=tests/unit/test_wire_link.py::test_the_document_matches_the_openapi_schema
  echo "test-debian-libs.sh: jsonschema_rs is not a Debian 12 package: deselecting $wire_schema"
  unit_args+=(--deselect "$wire_schema")
fi

set +e
# tests.run_counts: scripts/test.sh's closing line counts these runs too (LINK_TEST_COUNTS).
LINK_TEST_LABEL="pytest tests/unit on Debian's libraries" PYTHONPATH="$repo" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider -p tests.run_counts tests/unit "${unit_args[@]}" "${args[@]}" </dev/null
rc=$?
set -e
status "$rc"
[ "$rc" -eq 0 ] || exit "$rc"

if [ "$lab" = 1 ]; then
  [ "$(id -u)" -eq 0 ] || die "--lab needs root (network namespaces)"
  [ -n "${CI:-}" ] && export LINK_LAB_REQUIRED=1
  work=$(mktemp -d -t link-debian-libs.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  /usr/bin/python3 -m venv --system-site-packages --without-pip "$work/py"
  cat >"$work/py/bin/link-agent" <<PY
#!$work/py/bin/python
import sys
sys.path.insert(0, "$repo")
from link.agent.link_agent import main
sys.exit(main())
PY
  chmod +x "$work/py/bin/link-agent"
  # The lab tests that go through a library the .deb takes from Debian, one or two per library:
  # gRPC/etcd3 (election, etcd faults, TLS), waitress/bottle (API, flood), pyroute2/scapy
  # (binders, IPv6, failover's announcements); prometheus_client is exercised by the unit pass
  # above (/metrics rendered). The others test link's own logic, or the same library paths
  # again (CLI, exposure, VIP admission, LinK's keys, one-shot modes, observe, the wire,
  # priorities, checks, hostile etcd values, hung workers, programs, systemd's protocol, log
  # pacing, Prometheus's rules) and run on the virtualenv only (scripts/test.sh): the whole test
  # command stays near 15 minutes. The installed .deb itself runs in the package test.
  lab_tests=(test_election test_etcd_faults test_etcd_cluster_tls
             test_api test_api_flood
             test_binders test_ipv6 test_failover)
  selected=("${lab_tests[@]/#/tests/integration/}")
  selected=("${selected[@]/%/.py}")
  echo "test-debian-libs.sh: lab tests through Debian's libraries: ${lab_tests[*]}"
  set +e
  LINK_TEST_LABEL="pytest tests/integration on Debian's libraries" \
    "$work/py/bin/python" -m pytest -q -p no:cacheprovider -p tests.run_counts "${selected[@]}" \
    "${args[@]}" </dev/null
  rc=$?
  set -e
  status "$rc"
fi
exit "$rc"
