#!/usr/bin/env bash
# kdet against PyTorch on the same work (issue #7): the main pair's student train step,
# teacher forward, LD distill step and inference forward, timed by `kdet bench train` /
# `kdet bench infer` and by the PyTorch reference bench/reference/gfl_pair.py (same
# networks, loss, optimizer and batches), REPEATS rounds of separate processes alternating
# kdet and PyTorch; writes "## kdet against PyTorch" (CPU) or "## kdet against PyTorch on a
# GPU" in docs/benchmarks.md. Run it on an otherwise idle machine.
#
#   bash scripts/bench-torch.sh                      # CPU: burn-flex vs PyTorch, REPEATS=3
#   KDET_DEVICE=gpu:0 TORCH_DEVICE=cuda ...          # GPU: a `--features vulkan` kdet vs
#                                                    # PyTorch on CUDA (scripts/gpu/device-bench.sh)
#
# Settings (environment): REPEATS (3), ITERS (20) and WARMUP (5) per process; KDET_BIN (a
# kdet binary; else `cargo build --release`); KDET_DEVICE (kdet's --device, cpu);
# TORCH_DEVICE (the reference's --device, cpu); PY (a python with torch; else .venv-torch,
# created from bench/requirements.txt when missing: a large download from PyPI, once);
# TEACHER / STUDENT (checkpoints; else the seed-0 runs of scripts/bench-pair.sh); OUT_DIR
# (the JSON files, runs/bench/torch[-gpu]); TABLE=0 to skip writing docs/benchmarks.md
# (scripts/bench/torch_table.py OUT_DIR docs/benchmarks.md writes it later).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${REPEATS:-3}
iters=${ITERS:-20}
warmup=${WARMUP:-5}
device=${KDET_DEVICE:-cpu}
torch_device=${TORCH_DEVICE:-cpu}
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${KDET_BIN:-"$root/target/release/kdet"}
if [ -n "${PY:-}" ]; then
  py=$PY
else
  py=.venv-torch/bin/python
  if ! "$py" -c "import torch, numpy, PIL" 2>/dev/null; then
    python3 -m venv .venv-torch
    .venv-torch/bin/pip install --quiet -r bench/requirements.txt
  fi
fi
teacher=${TEACHER:-runs/bench/gfl_synth_teacher-seed0/last.ckpt}
student=${STUDENT:-runs/bench/gfl_synth_student-seed0/last.ckpt}
for ckpt in "$teacher" "$student"; do
  [ -f "$ckpt" ] || { echo "missing $ckpt: run scripts/bench-pair.sh first" >&2; exit 1; }
done
if [ "$device" = cpu ]; then default_out=runs/bench/torch; else default_out=runs/bench/torch-gpu; fi
out=${OUT_DIR:-$default_out}
mkdir -p "$out"
rm -f "$out"/*.json
for rep in $(seq 1 "$repeats"); do
  echo "== round $rep of $repeats"
  "$bin" bench train --config configs/distill/ld_gfl_synth.toml --teacher "$teacher" \
    --iters "$iters" --warmup "$warmup" --loader-batches 0 --device "$device" \
    --out "$out/kdet-train-r$rep.json" > /dev/null
  for b in 1 8; do
    for pair in "teacher:$teacher" "student:$student"; do
      "$bin" bench infer --checkpoint "${pair#*:}" --batch "$b" --iters "$iters" \
        --warmup "$warmup" --device "$device" \
        --out "$out/kdet-infer-${pair%%:*}-b$b-r$rep.json" > /dev/null
    done
  done
  # The configs' optimizer (AdamW); passive OpenMP waiting as kdet's thread pool.
  OMP_WAIT_POLICY=PASSIVE "$py" bench/reference/gfl_pair.py --optimizer adamw \
    --iters "$iters" --warmup "$warmup" --device "$torch_device" \
    --out "$out/torch-r$rep.json" > /dev/null
done
if [ "${TABLE:-1}" != 0 ]; then
  python3 "$root/scripts/bench/torch_table.py" "$out" docs/benchmarks.md
fi
