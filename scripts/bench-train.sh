#!/usr/bin/env bash
# The cost of distillation on the default backend (issue #7): `kdet bench train` for each
# recipe, REPEATS separate processes each, methods interleaved, and the table
# "## Distillation step overhead" in docs/benchmarks.md. Each process times, on the same
# real training batches and in a rotating order, the student step, the teacher forward and
# the distill step; the overhead is distill / (student + teacher). Run it on an otherwise
# idle machine (single-process medians vary by several percent).
#
#   bash scripts/bench-train.sh        # REPEATS=4 METHODS="logit_kd fitnet pkd ld"
#
# Needs the seed-0 teacher of scripts/bench-pair.sh (runs/bench/gfl_synth_teacher-seed0).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${REPEATS:-4}
methods=${METHODS:-"logit_kd fitnet pkd ld"}
iters=${ITERS:-20}
# KDET_BIN=path uses that binary instead of building one.
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${KDET_BIN:-"$root/target/release/kdet"}
teacher=runs/bench/gfl_synth_teacher-seed0/last.ckpt
[ -f "$teacher" ] || { echo "missing $teacher: run scripts/bench-pair.sh first" >&2; exit 1; }
out=runs/bench/train
mkdir -p "$out"
rm -f "$out"/*.json
for rep in $(seq 1 "$repeats"); do
  for m in $methods; do
    echo "== $m, process $rep of $repeats"
    "$bin" bench train --config "configs/distill/${m}_gfl_synth.toml" --teacher "$teacher" \
      --iters "$iters" --warmup 3 --out "$out/$m-r$rep.json" | tail -n 4
  done
done
python3 "$root/scripts/bench/train_table.py" "$out" docs/benchmarks.md
