#!/usr/bin/env bash
# The distillation benchmark of the synthetic mask pair (issue #16): the Mask2Former-lite
# student alone and distilled by each method, same schedule, seeds, data order and val
# split, and the section "## Mask pair: distillation on the built-in data" of
# docs/benchmarks.md (scripts/bench/mask_distill_table.py).
#
#   bash scripts/bench-mask-distill.sh                       # baseline, mqkd, pkd; seeds 0 1 2
#   METHODS="baseline mqkd" SEEDS="0" bash scripts/bench-mask-distill.sh
#   TABLE=0 ...                                              # cells only (parallel workers)
#
# Every cell is `kdet distill --config configs/distill/<method>_m2f_synth.toml` into
# runs/bench/mask-distill/<method>-seed<S>/; the teacher, for every student seed, is
# runs/m2f_synth_teacher-seed0/last.ckpt (`kdet train --config
# configs/m2f_synth_teacher.toml`, trained first when missing), or TEACHER=PATH.
#
# Resumable: a finished cell (its eval.json exists) is skipped, an interrupted one continues
# from its last checkpoint. RAYON_NUM_THREADS=1 runs two workers side by side on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/cell.sh"
seeds=${SEEDS:-"0 1 2"}
methods=${METHODS:-"baseline mqkd pkd"}
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
mkdir -p runs/bench/mask-distill
bin="$root/runs/bench/mask-distill/.kdet-$$"
cp "${KDET_BIN:-target/release/kdet}" "$bin"
trap 'rm -f "$bin"' EXIT

teacher=${TEACHER:-runs/m2f_synth_teacher-seed0/last.ckpt}
if [ ! -f "$teacher" ] && [ -z "${TEACHER:-}" ]; then
  run=runs/m2f_synth_teacher-seed0
  if [ -f "$run/last.ckpt" ]; then "$bin" train --out "$run" --resume
  else "$bin" train --config configs/m2f_synth_teacher.toml --out "$run"; fi
fi
for method in $methods; do
  for seed in $seeds; do
    run_cell "$bin" "configs/distill/${method}_m2f_synth.toml" "$teacher" "$seed" "runs/bench/mask-distill/$method-seed$seed"
  done
done
if [ "${TABLE:-1}" = 1 ]; then
  python3 "$root/scripts/bench/mask_distill_table.py" runs/bench/mask-distill \
    runs/m2f_synth_teacher-seed0 docs/benchmarks.md $methods
fi
