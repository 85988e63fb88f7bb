#!/usr/bin/env bash
# kdet against PyTorch on the same work (issue #7): the main pair's student train step,
# teacher forward, LD distill step and inference forward, timed by `kdet bench train` /
# `kdet bench infer` (burn-flex, CPU) and by the PyTorch reference bench/reference/gfl_pair.py
# (same networks, loss, optimizer and batches), REPEATS rounds of separate processes
# alternating kdet and PyTorch; writes "## kdet against PyTorch" in docs/benchmarks.md.
# Run it on an otherwise idle machine.
#
#   bash scripts/bench-torch.sh            # REPEATS=3
#
# Installs the reference's pinned torch (bench/requirements.txt) into .venv-torch when it is
# missing (a large download from PyPI, once). Needs the seed-0 runs of scripts/bench-pair.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${REPEATS:-3}
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${KDET_BIN:-"$root/target/release/kdet"}
py=.venv-torch/bin/python
if ! "$py" -c "import torch, numpy, PIL" 2>/dev/null; then
  python3 -m venv .venv-torch
  .venv-torch/bin/pip install --quiet -r bench/requirements.txt
fi
teacher=runs/bench/gfl_synth_teacher-seed0
student=runs/bench/gfl_synth_student-seed0
for run in "$teacher" "$student"; do
  [ -f "$run/last.ckpt" ] || { echo "missing $run: run scripts/bench-pair.sh first" >&2; exit 1; }
done
out=runs/bench/torch
mkdir -p "$out"
rm -f "$out"/*.json
for rep in $(seq 1 "$repeats"); do
  echo "== round $rep of $repeats"
  "$bin" bench train --config configs/distill/ld_gfl_synth.toml --teacher "$teacher/last.ckpt" \
    --iters 20 --warmup 5 --loader-batches 0 --out "$out/kdet-train-r$rep.json" > /dev/null
  for b in 1 8; do
    for pair in "teacher:$teacher" "student:$student"; do
      "$bin" bench infer --checkpoint "${pair#*:}" --batch "$b" --iters 20 --warmup 5 \
        --out "$out/kdet-infer-${pair%%:*}-b$b-r$rep.json" > /dev/null
    done
  done
  # The configs' optimizer (AdamW); passive OpenMP waiting as kdet's thread pool.
  OMP_WAIT_POLICY=PASSIVE "$py" bench/reference/gfl_pair.py --optimizer adamw \
    --iters 20 --warmup 5 --out "$out/torch-r$rep.json" > /dev/null
done
python3 "$root/scripts/bench/torch_table.py" "$out" docs/benchmarks.md
