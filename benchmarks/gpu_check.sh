#!/usr/bin/env bash
# Issue 14's GPU work in one call: a smoke check, the CUDA tests, the numbers, speed and scale of
# the default study (benchmarks/gpu_check.py), then the whole suite with CUDA visible while a
# CPU reference run of seed 0 trains beside it. Prints one table at the end; logs and raw
# numbers (gpu_check.json, gpu_check.csv, profile.txt) go to $OUT, or benchmarks/results/.
#
# Once, on the development machine, in the checkout that the device tool sends: wheels of the
# test extras the GPU image lacks, and the corpus, into the git-ignored .gpu/ (about 4 MB):
#   bash benchmarks/gpu_check.sh --prepare
# On the GPU (device tool: carry [".gpu"], timeout_s 480; the script keeps to --budget):
#   bash benchmarks/gpu_check.sh
# Dry run on a CPU (tiny sizes, the whole suite left out; SUITE_PATHS="tests/test_x.py ..." with
# --suite all runs those files in its place):
#   bash benchmarks/gpu_check.sh --device cpu --size tiny --iters 8 --runs 3 --scale 6 \
#       --precisions fp32,bf16 --suite none --budget 300
set -u -o pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda SIZE=default ITERS=300 RUNS=15 SCALE=45,75 PRECISIONS=fp32,tf32,bf16
SUITE=all BUDGET=450 PREPARE=0 PROFILE=auto WAYS=engine,grouped,grouped-eager
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --iters) ITERS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --scale) SCALE=$2; shift 2 ;;
        --precisions) PRECISIONS=$2; shift 2 ;;
        --ways) WAYS=$2; shift 2 ;;  # engine (run by run, ~95 s in fp32 on an H200), grouped...
        --suite) SUITE=$2; shift 2 ;;  # all | cuda (the CUDA tests only) | none
        --budget) BUDGET=$2; shift 2 ;;  # seconds for everything
        --profile) PROFILE=$2; shift 2 ;;  # auto | always | never
        --prepare) PREPARE=1; shift ;;
        *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
CORPUS=../shared/data/tinyshakespeare/input.txt
# Pure-Python wheels of what the GPU image lacks or has in other versions (pyproject's test
# extras, the console's dependencies); pytest and its plugins come too, so that the suite runs
# with the plugin set it is tested with here and no other. typer needs pydantic (and pydantic its
# compiled core, hence the platform tags: the GPU machine is x86-64 Linux).
WHEELS="pytest==8.4.2 pluggy==1.7.0 iniconfig==2.3.1 pytest-asyncio==1.5.0 pytest-timeout==2.4.0
    pytest-xdist==3.8.0 execnet==2.1.2 pytest-textual-snapshot==1.1.0 syrupy==4.8.0
    textual==8.2.8 textual-plotext==1.0.1 plotext==5.3.2 platformdirs==4.14.8
    mdit-py-plugins==0.7.0 markdown-it-py==4.3.0 rich==15.0.0 typer==0.29.2 pygments==2.21.0
    typing_extensions==4.16.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
    typing-inspection==0.4.5"

if [ "$PREPARE" = 1 ]; then
    mkdir -p .gpu/wheels
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF '/.gpu/' "$exclude" 2>/dev/null || echo '/.gpu/' >>"$exclude"
    # shellcheck disable=SC2086
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .gpu/wheels $WHEELS || exit 1
    src=${LABTUI_DATA:-$CORPUS}
    [ -f "$src" ] || { echo "gpu_check: no corpus at $src (set LABTUI_DATA)" >&2; exit 1; }
    cp "$src" .gpu/input.txt
    echo "prepared .gpu/ ($(du -sh .gpu | cut -f1)): carry [\".gpu\"] in the device call"
    exit 0
fi

START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }
OUT=${OUT:-benchmarks/results/gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== setup"
PYTEST=(-m pytest -q -p no:cacheprovider)
if [ -d .gpu/wheels ]; then
    site=/tmp/labtui-site
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" \
        .gpu/wheels/*.whl || echo "gpu_check: the carried wheels did not install (built for Python 3.12, x86-64)"
    # the project's metadata (labtui --version reads it); its code still comes from $PWD
    if ! $PY -m pip install -q --no-index --no-deps --no-build-isolation --upgrade \
        --target "$site" . >/dev/null 2>&1; then
        version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
        mkdir -p "$site/labtui-$version.dist-info"
        printf 'Metadata-Version: 2.1\nName: labtui\nVersion: %s\n' "$version" \
            >"$site/labtui-$version.dist-info/METADATA"
        echo "gpu_check: no build of the project here; wrote its metadata by hand ($version)"
    fi
    export PYTHONPATH="$PWD:$site" PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
    PYTEST+=(-p pytest_asyncio.plugin -p syrupy -p pytest_textual_snapshot -p pytest_timeout
        -p xdist.plugin)
fi
if [ ! -f "$CORPUS" ] && [ -f .gpu/input.txt ]; then
    mkdir -p "$(dirname "$CORPUS")" && cp .gpu/input.txt "$CORPUS"
fi
[ -f "$CORPUS" ] && export LABTUI_DATA="$(cd "$(dirname "$CORPUS")" && pwd)/input.txt"
XDIST=()
$PY -c "import xdist" 2>/dev/null && XDIST=(-n "${WORKERS:-8}")
command -v nvidia-smi >/dev/null && nvidia-smi -L
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
COMMON=(--out "$OUT" --device "$DEVICE" --size "$SIZE" --iters "$ITERS" --runs "$RUNS")

echo "== smoke: grouped = engine on 3 tiny runs ($(left) s left)"
timeout 120 $PY benchmarks/gpu_check.py smoke "${COMMON[@]}"
SMOKE=$?

echo "== CUDA tests ($(left) s left)"
CUDA_TESTS=(tests/test_app_cuda.py "tests/test_grouped.py::test_group_on_cuda_matches_the_engine_on_cuda")
timeout 180 $PY "${PYTEST[@]}" -n 0 -x -rs "${CUDA_TESTS[@]}" 2>&1 | tee "$OUT/pytest_cuda.log"
CUDA_RC=${PIPESTATUS[0]}

RESERVE=30  # the report, and the CPU reference when there is no suite to wait for
[ "$SUITE" = all ] && RESERVE=170
echo "== numbers, speed, scale ($(left) s left, $((BUDGET - RESERVE - (SECONDS - START))) s for this)"
$PY benchmarks/gpu_check.py measure "${COMMON[@]}" --precisions "$PRECISIONS" --ways "$WAYS" \
    --scale "$SCALE" --profile "$PROFILE" --budget $((BUDGET - RESERVE - (SECONDS - START)))

echo "== whole suite with CUDA visible, and the CPU reference beside it ($(left) s left)"
$PY benchmarks/gpu_check.py cpu-reference "${COMMON[@]}" --threads 6 &
CPU_PID=$!
TESTS="smoke=$SMOKE,cuda=$CUDA_RC"
if [ "$SUITE" = all ]; then
    limit=$(($(left) - 15))
    [ $limit -lt 60 ] && limit=60
    # shellcheck disable=SC2086
    timeout $limit $PY "${PYTEST[@]}" -x "${XDIST[@]}" ${SUITE_PATHS:-tests} \
        --ignore tests/test_app_cuda.py --deselect "${CUDA_TESTS[1]}" 2>&1 |
        tee "$OUT/pytest_suite.log" | tail -n 40
    TESTS="$TESTS,suite=${PIPESTATUS[0]}"
fi
while kill -0 $CPU_PID 2>/dev/null && [ "$(left)" -gt 5 ]; do sleep 1; done
kill $CPU_PID 2>/dev/null && echo "gpu_check: CPU reference stopped (budget)"
wait $CPU_PID 2>/dev/null

echo "== report ($(left) s left)"
$PY benchmarks/gpu_check.py report "${COMMON[@]}" --tests "$TESTS"
echo "raw numbers and logs: $OUT"
[[ "$TESTS" =~ =[1-9] ]] && exit 1
exit 0
