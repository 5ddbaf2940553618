#!/usr/bin/env bash
# The prepared GPU check (docs/gpu_check.md): one command, one JSON, under 8 minutes on one NVIDIA GPU, no network.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out FILE] [other benchmarks/gpu_check.py flags]
#
# Runs benchmarks/gpu_check.py from this checkout (jaxkd need not be installed: the checkout goes on PYTHONPATH)
# with the interpreter in $PYTHON (default: python3). The Python side budgets its sections (--budget, 400 s by
# default) and rewrites the JSON after each; this script stops it after $GPU_CHECK_LIMIT seconds (default 440;
# 300 with --dry-run) and, if it had to, marks the JSON as cut short.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
python="${PYTHON:-python3}"
out="gpu_check.json"
dry=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --dry-run | --tiny) dry=1 ;;
        --out) out="${args[$((i + 1))]:-}" ;;
        --out=*) out="${args[$i]#--out=}" ;;
        -h | --help) exec "$python" "$here/gpu_check.py" --help ;;
    esac
done
[ -n "$out" ] || { echo "gpu_check: error: --out needs a file name" >&2; exit 2; }
if [ "$dry" = 1 ]; then limit="${GPU_CHECK_LIMIT:-300}"; else limit="${GPU_CHECK_LIMIT:-440}"; fi

export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# No network on the GPU machine: never let a library try to download.
export HF_DATASETS_OFFLINE=1 TFDS_DATA_DIR="${TFDS_DATA_DIR:-/nonexistent}" NO_GCE_CHECK=true
# XLA must not grab 75 % of the GPU up front: the PyTorch section shares the device.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

missing=$("$python" - <<'PY'
import importlib.util
# Found without importing them (a second or more each on a busy machine); jaxkd and the experiment are imported.
mods = ["jax", "flax", "optax", "orbax.checkpoint", "numpy", "scipy", "sklearn", "matplotlib", "pandas", "tqdm"]
bad = [m for m in mods if importlib.util.find_spec(m) is None]
for m in ("jaxkd", "experiments.cifar_kd"):
    try:
        importlib.import_module(m)
    except Exception as e:  # an ImportError or a broken install
        bad.append(f"{m} ({type(e).__name__}: {e})")
print("; ".join(bad))
PY
) || missing="the interpreter $python did not run"
if [ -n "$missing" ]; then
    echo "gpu_check: error: cannot import: $missing. Install the wheelhouse first (docs/gpu_check.md)." >&2
    exit 2
fi

if [ "$dry" = 0 ]; then
    "$python" -c 'import jax, sys; d = jax.devices()[0]; sys.exit(0 if d.platform == "gpu" else 1)' || {
        echo "gpu_check: error: JAX sees no GPU (jax.devices() is not CUDA); install jax[cuda12] or use --dry-run" >&2
        exit 2
    }
fi

start=$(date +%s)
rc=0
timeout --signal=TERM --kill-after=20 "$limit" "$python" "$here/gpu_check.py" "$@" || rc=$?
echo "gpu_check: finished in $(($(date +%s) - start)) s with status $rc; JSON: $out" >&2
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    # Cut short by the limit: the JSON holds every finished section; record why the rest are missing.
    "$python" - "$out" "$limit" <<'PY' || true
import json, os, sys
path, limit = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        result = json.load(f)
except (OSError, ValueError):
    result = {"check": "gpu_check", "sections": {}}
result["complete"] = False
result["cut_short"] = f"stopped by benchmarks/gpu_check.sh after {limit} s (GPU_CHECK_LIMIT)"
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(result, f, indent=2)
os.replace(tmp, path)
PY
fi
exit "$rc"
