#!/usr/bin/env bash
# The README quick start: on a fresh machine with Python 3.10+ and pip, create a local
# virtual environment (.venv), install CPU torch without pulling a CUDA build (the pins in
# constraints.txt), build camfast and its compiled extension, and run the test suite.
# Extra arguments go to pytest, e.g.  scripts/test.sh -k grad_weighted_map -x
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

echo "== installing dependencies (constraints.txt pins torch)"
python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
echo "== building camfast (scikit-build-core, CMake; CUDA kernels too if nvcc is found)"
python -m pip install --quiet --disable-pip-version-check -c constraints.txt --no-build-isolation --no-deps -e .
echo "== running the tests"
# CAMFAST_REQUIRE_NATIVE=1: the tests fail unless the compiled extension built just now is loaded.
CAMFAST_REQUIRE_NATIVE=1 python -m pytest "$@"
