#!/usr/bin/env bash
# The GPU measurements of issues #3 and #6, in stages that each fit one 10-minute call on
# a lent GPU machine (a bare image with CUDA's JAX; the pure-Python peers it lacks
# travel as wheels in .whl/, see benchmarks/README.md). Run from the repository root:
#
#     bash benchmarks/gpu.sh smoke     # versions, a float32/float64 filter, the f32 tests
#     bash benchmarks/gpu.sh sweep     # bench_scale: T sweep 10²…10⁶, float32 vs float64 (T=10⁴)
#     bash benchmarks/gpu.sh panel     # bench_scale: 1000-subject panel + NUTS 500 + 500
#     bash benchmarks/gpu.sh filter    # bench_filter: SHO N = 10³…10⁵, parallel vs sequential, peers
#
# Results go to $KALMANAD_BENCH_RESULTS (default benchmarks/results/), with a "_gpu"
# suffix on the stem. Each step has its own time-out, so one slow step cannot lose the
# others; every step's log is written beside the results.
set -u
cd "$(dirname "$0")/.."
out="${KALMANAD_BENCH_RESULTS:-benchmarks/results}"
mkdir -p "$out"
export KALMANAD_BENCH_RESULTS="$out" PYTHONUNBUFFERED=1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

step() {  # step NAME SECONDS COMMAND...: run with a time-out, log to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

case "${1:-}" in
smoke)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    step smoke 90 python3 - <<'EOF'
import jax, jax.numpy as jnp, numpy as np
import kalmanad
print("jax", jax.__version__, jax.devices(), "kalmanad", kalmanad.__file__)
rng = np.random.default_rng(0)
t = np.cumsum(rng.exponential(0.1, 1000))
y = np.sin(t)[:, None] + 0.1 * rng.standard_normal((1000, 1))
for dtype in (jnp.float32,):
    m = kalmanad.LinearSDE(
        drift=jnp.array([[0.0, 1.0], [-1.7, -0.4]], dtype),
        diffusion=jnp.diag(jnp.array([0.0, 0.9], dtype)),
        observation=jnp.array([[1.0, 0.0]], dtype),
        observation_noise=jnp.array([[0.01]], dtype),
    )
    for method in ("sequential", "sqrt", "parallel"):
        ll = kalmanad.log_likelihood(m, t, jnp.asarray(y, dtype), method=method)
        print(dtype.__name__, method, float(ll), ll.dtype)
EOF
    # The float32 promises of the test suite, on the GPU (x64 enabled by conftest).
    step tests_f32 200 python3 -m pytest -q -x -p no:cacheprovider -k "float32 or f32" \
        tests/test_filter_core.py tests/test_linalg_expm.py tests/test_linalg_lyapunov.py \
        tests/test_linalg_cholesky.py tests/test_discretize.py
    ;;
sweep)
    KALMANAD_BENCH_TAG=sweep step bench_scale_sweep 340 python3 benchmarks/bench_scale.py \
        --parts sweep precision --quick --precision-T 10000 --sizes 100 1000 10000 100000 1000000 \
        --sequential-max 100000 --repeats 3 --workers 8
    ;;
panel)
    # --quick: the sequential and parallel filters and a 20-subject peer; NUTS 500 + 500.
    KALMANAD_BENCH_TAG=panel step bench_scale_panel 300 python3 benchmarks/bench_scale.py \
        --parts panel nuts --quick --num-warmup 500 --num-samples 500 --nuts-method auto \
        --repeats 5 --workers 8
    ;;
filter)
    # jaxlib 0.11.2's GPU compiler aborts on the dynestyx-equivalent peer's program
    # (triton_tiling_propagation.cc: "Check failed: subdim_size_accumulator == dim_size
    # (62 vs. 61)"; kalmanad's and tinygp's programs compile without it): Triton GEMM
    # fusion off for the whole run, recorded in the JSON's machine.xla_flags.
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_enable_triton_gemm=false"
    step bench_filter 240 python3 benchmarks/bench_filter.py --sizes 1000 10000 100000 \
        --skip sqrt naive dynamax --statsmodels-max 0 --no-breakdown --repeats 5 --workers 8
    ;;
*)
    echo "usage: bash benchmarks/gpu.sh smoke|sweep|panel|filter" >&2
    exit 2
    ;;
esac
