#!/usr/bin/env bash
# The distillation benchmark on the built-in data (issue #5): the GFL student baseline and
# the student distilled with each method, same schedule, seeds, data order and val split,
# and the table "## Distillation on the built-in data" in docs/benchmarks.md.
#
#   bash scripts/bench-distill.sh                 # baseline, ld, fgd, pkd; seeds 0 1 2
#   METHODS="baseline ld" SEEDS="0" bash scripts/bench-distill.sh
#
# Every cell is `kdet distill --config configs/distill/<method>_gfl_synth.toml` (the
# baseline: the same student and schedule with an empty recipe) into
# runs/bench/distill/<method>-seed<S>/; the teacher is the seed-0 teacher of
# scripts/bench-pair.sh (runs/bench/gfl_synth_teacher-seed0, trained here if missing) for
# every student seed.
#
# Resumable: a finished cell (its eval.json exists) is skipped, an interrupted one continues
# from its last checkpoint, so the work can span sessions.
#
# The LD, FGD and PKD recipes carry weights picked by scripts/tune-distill.sh on a separate
# tuning split; cells of the calibrated (untuned) weights kept in
# runs/bench/distill-calibrated/<method>-seed<S> get their own rows in the table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seeds=${SEEDS:-"0 1 2"}
methods=${METHODS:-"baseline ld fgd pkd"}
# KDET_BIN=path uses that binary instead of building one.
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
mkdir -p runs/bench/distill
# A private copy: rebuilding the workspace meanwhile cannot swap the binary between cells.
cp "${KDET_BIN:-target/release/kdet}" runs/bench/distill/.kdet
bin="$root/runs/bench/distill/.kdet"

train_cell() { # config out seed
  if [ -f "$2/eval.json" ]; then
    echo "== $2: done, skipped"
  elif [ -f "$2/last.ckpt" ]; then
    echo "== $2: resuming"
    "$bin" train --config "configs/$1.toml" --out "$2" --resume
  else
    echo "== $2: training"
    "$bin" train --config "configs/$1.toml" --out "$2" --seed "$3"
  fi
}

teacher=runs/bench/gfl_synth_teacher-seed0
train_cell gfl_synth_teacher "$teacher" 0
for method in $methods; do
  for seed in $seeds; do
    out="runs/bench/distill/$method-seed$seed"
    if [ -f "$out/eval.json" ]; then
      echo "== $out: done, skipped"
    elif [ -f "$out/last.ckpt" ]; then
      echo "== $out: resuming"
      "$bin" distill --out "$out" --resume
    else
      echo "== $out: distilling"
      "$bin" distill --config "configs/distill/${method}_gfl_synth.toml" \
        --teacher "$teacher/last.ckpt" --seed "$seed" --out "$out"
    fi
  done
done
python3 "$root/scripts/bench/distill_table.py" runs/bench/distill docs/benchmarks.md $methods
