#!/usr/bin/env bash
# Install (scripts/install.sh), then run the whole test suite: unit and lab (namespace) tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k failover -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh

# In CI (as root) the lab must run: a lab test that cannot build its namespaces fails there
# instead of being skipped.
if [ -n "${CI:-}" ]; then
  export LINK_LAB_REQUIRED=1
fi

set +e
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@" </dev/null
rc=$?
set -e
case $rc in
  0) ;;
  5) echo "test.sh: pytest collected no tests: that is a failure" >&2 ;;
  *) echo "test.sh: pytest exited with $rc" >&2 ;;
esac
[ "$rc" -eq 0 ] || exit "$rc"

# The same unit and lab tests on Debian 12's own Python and libraries, the ones the .deb
# depends on (older grpc, pyroute2, bottle, waitress...). Skipped only when extra pytest
# arguments select a subset of the tests.
if [ "$#" -eq 0 ]; then
  echo "test.sh: again on Debian's own libraries (scripts/test-debian-libs.sh --lab)"
  exec bash scripts/test-debian-libs.sh --lab
fi
