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
# runs/bench/distill/<method>-seed<S>/; the teacher, for every student seed, is the shipped
# one (assets/teacher/gfl_synth_teacher-seed0.ckpt: the seed-0 teacher of
# scripts/bench-pair.sh, exported; the one `kdet demo` uses), or TEACHER=PATH.
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
. "$root/scripts/cell.sh"
seeds=${SEEDS:-"0 1 2"}
methods=${METHODS:-"baseline ld fgd pkd"}
# KDET_BIN=path uses that binary instead of building one.
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
mkdir -p runs/bench/distill
# A private copy: rebuilding the workspace meanwhile cannot swap the binary between cells.
cp "${KDET_BIN:-target/release/kdet}" runs/bench/distill/.kdet
bin="$root/runs/bench/distill/.kdet"

teacher=${TEACHER:-assets/teacher/gfl_synth_teacher-seed0.ckpt}
[ -f "$teacher" ] || { echo "bench-distill.sh: no teacher at $teacher" >&2; exit 1; }
for method in $methods; do
  for seed in $seeds; do
    run_cell "$bin" "configs/distill/${method}_gfl_synth.toml" "$teacher" "$seed" "runs/bench/distill/$method-seed$seed"
  done
done
python3 "$root/scripts/bench/distill_table.py" runs/bench/distill docs/benchmarks.md $methods
