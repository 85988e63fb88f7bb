#!/usr/bin/env bash
# NDet's noisy-box table on the built-in data (issue #20, item 5): at each noise level
# gamma, the GFL student of the distillation benchmark trained on the noisy boxes
# (configs/noisy/noisy_gfl_synth.toml) and a new student trained on the same noisy boxes
# corrected by it (configs/noisy/corrected_gfl_synth.toml, the teacher being the noisy
# student of the same seed: every seed is a whole NDet pipeline), both scored on the clean
# validation boxes; the clean row is the distillation benchmark's baseline
# (runs/bench/distill/baseline-seed<S>, scripts/bench-distill.sh). Each (gamma, seed) also
# measures how close the teacher's fusion brings the training boxes to the clean ones
# (`kdet data correct`). Writes "## Noisy boxes: NDet's self-correction" in
# docs/benchmarks.md.
#
#   bash scripts/bench-noisy.sh                         # gamma 0.1 0.2 0.4, seeds 0 1 2
#   GAMMAS="0.4" SEEDS="0" TABLE=0 bash scripts/bench-noisy.sh
#
# Resumable: finished cells are skipped, interrupted ones continue from their checkpoint.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. "$root/scripts/cell.sh"
gammas=${GAMMAS:-"0.1 0.2 0.4"}
seeds=${SEEDS:-"0 1 2"}
# KDET_BIN=path uses that binary instead of building one.
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
mkdir -p runs/bench/noisy
bin=${KDET_BIN:-$root/target/release/kdet}
# The clean and noisy students carry the shipped teacher as the benchmark's baseline does
# (their recipes are empty: it is never run).
shipped=assets/teacher/gfl_synth_teacher-seed0.ckpt

cell() { # config teacher seed out gamma: a resumable cell (scripts/cell.sh), appended to out.log
  mkdir -p "$(dirname "$4")"
  run_cell "$bin" "$1" "$2" "$3" "$4" --set "data.synth.box_noise=$5" >>"$4.log" 2>&1
  tail -n 1 "$4.log"
}

for gamma in $gammas; do
  dir=runs/bench/noisy/gamma-$gamma
  for seed in $seeds; do
    cell configs/noisy/noisy_gfl_synth.toml "$shipped" "$seed" "$dir/noisy-seed$seed" "$gamma"
    cell configs/noisy/corrected_gfl_synth.toml "$dir/noisy-seed$seed/last.ckpt" "$seed" \
      "$dir/corrected-seed$seed" "$gamma"
    json=$dir/correction-seed$seed.json
    if [ ! -f "$json" ]; then
      "$bin" data correct "data/synth/train/annotations.noise-$gamma.json" \
        --clean data/synth/train/annotations.json --images data/synth/train/images \
        --teacher "$dir/noisy-seed$seed" --config configs/noisy/corrected_gfl_synth.toml \
        --json "$json"
    fi
  done
done
if [ "${TABLE:-1}" = 1 ]; then
  python3 scripts/bench/noisy_table.py runs/bench/noisy runs/bench/distill docs/benchmarks.md
fi
