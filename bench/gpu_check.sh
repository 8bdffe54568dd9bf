#!/usr/bin/env bash
# GPU checks for a lent CUDA machine (not CI): the gpu-marked tests, patchcore's bank on the GPU, and patchknn end to end on the
# generated set with fp32 and AMP, exact and streaming metrics, against the same run on that machine's CPU.
# Usage there: bash bench/gpu_check.sh [OUT_DIR]; missing packages may be carried as wheels in .whl/.
set -uo pipefail
OUT_DIR="${1:-${OUT:-/tmp/adzoo-gpu}}"
mkdir -p "$OUT_DIR"
if [ -d .whl ]; then
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .whl/* 2>&1 | tail -3
fi
export PYTHONPATH=src ADZOO_CACHE_DIR=/tmp/adzoo-cache WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -5
run() {  # name, overrides...
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  python3 -m adzoo.train trainer.enable_progress_bar=false "hydra.run.dir=$OUT_DIR/$name" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc wall=$(( ($(date +%s%N) - t0) / 1000000 )) ms"
  grep -A8 "metrics in" "$OUT_DIR/$name.log" | tail -2
  tail -3 "$OUT_DIR/$name.log" | grep -i -E "error|exception" || true
}
run cpu trainer=cpu
run gpu_fp32 trainer=gpu
run gpu_amp trainer=gpu trainer.precision=16-mixed
run gpu_streaming trainer=gpu callbacks=streaming
# The memory bank on the GPU (issue 16): the greedy coreset runs there; exact and IVF indices need faiss-gpu
# (`make install GPU=1`), HNSW stays on the CPU by design. Each log's "memory bank:" line gives its seconds.
for search in exact ivf hnsw; do
  run "patchcore_gpu_$search" trainer=gpu method=patchcore "bank.search=$search"
  grep -h "memory bank:" "$OUT_DIR/patchcore_gpu_$search.log" | tail -1 || true
done
python3 - "$OUT_DIR" <<'PY'
import json, sys
root = sys.argv[1]
ref = json.load(open(f"{root}/cpu/results.json"))["metrics"]["per_category"]
for name in ("gpu_fp32", "gpu_amp", "gpu_streaming"):
    try:
        res = json.load(open(f"{root}/{name}/results.json"))
    except OSError:
        print(name, "no results"); continue
    per = res["metrics"]["per_category"]
    worst = max(abs(per[c][k] - ref[c][k]) for c in ref for k in ref[c] if k in per[c])
    print(f"{name}: max |metric - cpu| = {worst:.2e}; fit {res['timing']['fit_s']:.2f}s test {res['timing']['test_s']:.2f}s; device {res['device'].get('gpu')}")
PY
