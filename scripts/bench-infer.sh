#!/usr/bin/env bash
# Inference speed of the shipped detector pair (issue #4: the student must run inference at
# least 2x faster than the teacher): `kdet bench infer` on each trained seed-0..2 checkpoint
# of scripts/bench-pair.sh, batch 1 and batch 8 of 128x128, teacher and student interleaved,
# REPEATS processes each; writes "## Inference speed of the detector pair" in
# docs/benchmarks.md. Run it on an otherwise idle machine.
#
#   bash scripts/bench-infer.sh            # REPEATS=3 SEEDS="0 1 2" BATCHES="1 8"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
repeats=${REPEATS:-3}
seeds=${SEEDS:-"0 1 2"}
batches=${BATCHES:-"1 8"}
# KDET_BIN=path uses that binary instead of building one.
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${KDET_BIN:-"$root/target/release/kdet"}
out=runs/bench/infer
mkdir -p "$out"
rm -f "$out"/*.json
for rep in $(seq 1 "$repeats"); do
  for seed in $seeds; do
    for b in $batches; do
      for cfg in gfl_synth_teacher gfl_synth_student; do
        run="runs/bench/$cfg-seed$seed"
        [ -f "$run/last.ckpt" ] || continue
        "$bin" bench infer --checkpoint "$run" --batch "$b" --iters 30 --warmup 5 \
          --out "$out/$cfg-seed$seed-b$b-r$rep.json" > /dev/null
      done
    done
  done
done
python3 "$root/scripts/bench/infer_table.py" "$out" docs/benchmarks.md
