#!/usr/bin/env bash
# Install (scripts/install.sh), then run the whole test suite: unit and lab (namespace) tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k failover -x`.
#
# It says where it is: each phase (install, mypy (strict) on link/, pytest on the virtualenv,
# the same tests on Debian's own libraries) is announced, then closed with its outcome and how
# long it took. The mypy phase counts as one test; when it fails, no test runs after it.
# Its last line counts every test of both passes and the mypy check, and nothing follows it:
#   N passed, N failed[, N skipped]
# (tests/run_counts.py: errors count as failed; a pass that fails without a failed test, or
# an install that fails, counts as one failed). mypy's exit status, when it fails, then
# pytest's is the command's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

counts=$(mktemp -t link-test-counts.XXXXXX)
export LINK_TEST_COUNTS=$counts
started=$SECONDS

elapsed() {  # seconds -> "42 s" or "7 min 05 s"
  local s=$1
  if [ "$s" -lt 60 ]; then echo "$s s"; else printf '%d min %02d s\n' $((s / 60)) $((s % 60)); fi
}

phase_start=0
phase_name=
phase() {  # phase N "name" "details": announce it
  phase_name="[$1/4] $2"
  phase_start=$SECONDS
  echo "test.sh: $phase_name${3:+ ($3)}"
}
phase_end() {  # phase_end STATUS: how it ended, and how long it took
  local outcome="done"
  [ "$1" -eq 0 ] || outcome="FAILED (exit $1)"
  echo "test.sh: $phase_name: $outcome in $(elapsed $((SECONDS - phase_start)))"
}

finish() {
  local rc=$?
  trap - EXIT
  echo "test.sh: whole command: $(elapsed $((SECONDS - started))), exit $rc"
  # The closing line, last (python3 of the system: the virtualenv may not exist if install failed).
  if ! python3 -m tests.run_counts "$counts" "$rc"; then
    echo "0 passed, 1 failed"  # the counts are lost: never a line that reads as success
    rc=1
  fi
  rm -f "$counts"
  exit "$rc"
}
trap finish EXIT

phase 1 install scripts/install.sh
set +e
bash scripts/install.sh
rc=$?
set -e
phase_end "$rc"
[ "$rc" -eq 0 ] || exit "$rc"

# In CI (as root) the lab must run: a lab test that cannot build its namespaces fails there
# instead of being skipped.
if [ -n "${CI:-}" ]; then
  export LINK_LAB_REQUIRED=1
fi

# The type check first: seconds, where the tests take minutes (mypy.ini: strict over link/).
phase 2 "mypy (strict) on link/" ".venv/bin/python -m mypy link, mypy.ini"
set +e
.venv/bin/python -m mypy link </dev/null
rc=$?
set -e
python3 -m tests.run_counts "$counts" --check "mypy (strict) on link/" "$rc"
[ "$rc" -eq 0 ] || echo "test.sh: mypy (strict) on link/ failed (exit $rc): the type errors are listed above" >&2
phase_end "$rc"
[ "$rc" -eq 0 ] || exit "$rc"

phase 3 "pytest on the virtualenv" ".venv, PyPI libraries: unit, lab, chaos, benchmarks' smoke run, package"
set +e
LINK_TEST_LABEL="pytest on the virtualenv" .venv/bin/python -m pytest -q -p no:cacheprovider -p tests.run_counts tests "$@" </dev/null
rc=$?
set -e
case $rc in
  0) ;;
  5) echo "test.sh: pytest collected no tests: that is a failure" >&2 ;;
  *) echo "test.sh: pytest exited with $rc" >&2 ;;
esac
phase_end "$rc"
[ "$rc" -eq 0 ] || exit "$rc"

# The same unit and lab tests on Debian 12's own Python and libraries, the ones the .deb
# depends on (older grpc, pyroute2, bottle, waitress...). Skipped only when extra pytest
# arguments select a subset of the tests.
if [ "$#" -eq 0 ]; then
  phase 4 "Debian's own libraries" "scripts/test-debian-libs.sh --lab: unit tests and the lab tests through its libraries"
  set +e
  bash scripts/test-debian-libs.sh --lab
  rc=$?
  set -e
  phase_end "$rc"
  exit "$rc"
fi
echo "test.sh: [4/4] Debian's own libraries: not run (extra pytest arguments select a subset of the tests)"
