#!/usr/bin/env bash
# GPU checks for a lent CUDA machine (not CI), in sections so each fits one 10-minute device call:
#   tests  the gpu-marked tests of the suite
#   bench  bench/bench_train_step.py on CUDA (recompute / cache / bf16 / fp16 / compile)
#   demo   every method's demo profile on the generated set in 32-true, bf16-mixed and 16-mixed, and the metric
#          change against fp32 (PRECISIONS and DEMOS narrow it)
#   bank   patchcore's memory bank on the GPU with each search (exact and IVF need faiss-gpu: make install GPU=1)
#   ddp    trainer=ddp on one device as a smoke test (patchknn, then 5 steps of UniAD's demo profile)
#   metric patchknn on CPU vs GPU in fp32 / AMP / streaming metrics (the metric agreement check)
# Usage there: bash bench/gpu_check.sh [OUT_DIR] [SECTIONS...] (default: every section). Missing packages may be
# carried as wheels in .whl/. The figures go to the README's "Measured here" table with the device named.
set -uo pipefail
OUT_DIR="${1:-${OUT:-/tmp/adzoo-gpu}}"
shift || true
SECTIONS="${*:-tests bench demo bank ddp metric}"
PRECISIONS="${PRECISIONS:-32-true bf16-mixed 16-mixed}"
DEMOS="${DEMOS:-demo demo_patchcore demo_cap demo_transformaly demo_uniad demo_adtr}"
mkdir -p "$OUT_DIR"
if [ -d .whl ]; then
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .whl/* 2>&1 | tail -3
fi
export PYTHONPATH=src ADZOO_CACHE_DIR=/tmp/adzoo-cache WANDB_MODE=offline
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
TRAINER="${TRAINER:-gpu}"   # TRAINER=cpu dry-runs the script on a CPU machine
DDP="${DDP:-ddp}"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

run() {  # name, overrides...: one adzoo-train run, its wall time and its metric line
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  python3 -m adzoo.train trainer.enable_progress_bar=false force=true "hydra.run.dir=$OUT_DIR/$name" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc wall=$(( ($(date +%s%N) - t0) / 1000000 )) ms"
  grep -A8 "metrics in" "$OUT_DIR/$name.log" | tail -2
  tail -3 "$OUT_DIR/$name.log" | grep -i -E "error|exception" || true
}

if want tests; then
  python3 -m pytest -m gpu -q -p no:cacheprovider tests 2>&1 | tail -5
fi

if want bench; then
  python3 bench/bench_train_step.py --device cuda --repeats 5 2>&1 | tee "$OUT_DIR/bench_train_step.md"
fi

if want demo; then
  for demo in $DEMOS; do
    for precision in $PRECISIONS; do
      run "${demo}_${precision}" "experiment=$demo" trainer=$TRAINER "trainer.precision=$precision"
    done
  done
  python3 - "$OUT_DIR" "$DEMOS" "$PRECISIONS" <<'PY'
import json, sys
root, demos, precisions = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
keys = ("image_auroc", "pixel_auroc", "pixel_aupro")
print("| demo | precision | I / P / AUPRO | Δ vs 32-true | fit s |")
print("| --- | --- | --- | --- | --- |")
for demo in demos:
    base = None
    for precision in precisions:
        try:
            res = json.load(open(f"{root}/{demo}_{precision}/results.json"))
        except OSError:
            print(f"| {demo} | {precision} | no results | | |"); continue
        mean = res["metrics"]["mean"]
        values = [100 * mean.get(k, float("nan")) for k in keys]
        base = values if precision == "32-true" else base
        delta = " / ".join(f"{v - b:+.2f}" for v, b in zip(values, base)) if base and precision != "32-true" else ""
        cells = " / ".join(f"{v:.2f}" for v in values)
        print(f"| {demo} | {precision} | {cells} | {delta} | {res['timing']['fit_s']:.1f} |")
PY
fi

if want bank; then
  # The greedy coreset runs on the GPU; exact and IVF indices need faiss-gpu, HNSW stays on the CPU by design.
  for search in exact ivf hnsw; do
    run "patchcore_gpu_$search" trainer=$TRAINER method=patchcore "bank.search=$search"
    grep -h "memory bank:" "$OUT_DIR/patchcore_gpu_$search.log" | tail -1 || true
  done
fi

if want ddp; then
  run ddp_patchknn trainer=$DDP trainer.devices=1 method=patchknn
  run ddp_uniad trainer=$DDP trainer.devices=1 experiment=demo_uniad trainer.max_epochs=1 trainer.limit_train_batches=5
fi

if want metric; then
  run cpu trainer=cpu
  run gpu_fp32 trainer=$TRAINER
  run gpu_amp trainer=$TRAINER trainer.precision=16-mixed
  run gpu_streaming trainer=$TRAINER callbacks=streaming
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
fi
