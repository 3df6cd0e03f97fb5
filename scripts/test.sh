#!/usr/bin/env bash
# The README quick start: on a fresh machine with Python 3.10+ and pip, set up .venv
# (scripts/setup.sh: CPU torch pinned by constraints.txt, the dev requirements, the
# editable build with the compiled extension) and run the test suite.
# Extra arguments go to pytest, e.g.  scripts/test.sh -k grad_weighted_map -x
set -euo pipefail
# shellcheck source=setup.sh
. "$(dirname "$0")/setup.sh"
cd "$CAMFAST_ROOT"
echo "== running the tests"
# CAMFAST_REQUIRE_NATIVE=1: the tests fail unless the compiled extension built just now is loaded.
CAMFAST_REQUIRE_NATIVE=1 python -m pytest "$@"
