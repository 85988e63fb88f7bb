#!/usr/bin/env bash
# The shipped detector pair on the built-in data (issue #4): trains the GFL teacher and the
# GFL student for each seed, evaluates them on the validation split, and writes the table
# "## Detector pair on the built-in data" in docs/benchmarks.md.
#
#   bash scripts/bench-pair.sh                # seeds 0 1 2
#   SEEDS="0" bash scripts/bench-pair.sh      # one seed
#
# Resumable: a finished (config, seed) cell (its eval.json exists) is skipped, an
# interrupted one continues from its last checkpoint, so the work can span sessions.
# Runs go to runs/bench/<config>-seed<seed>/. Needs a release build (made here).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seeds=${SEEDS:-"0 1 2"}
configs=${CONFIGS:-"gfl_synth_teacher gfl_synth_student"}
# KDET_BIN=path uses that binary instead of building one.
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
# A private copy, so that rebuilding the workspace while this script runs cannot swap
# the binary between cells.
mkdir -p runs/bench
cp "${KDET_BIN:-target/release/kdet}" runs/bench/.kdet
bin="$root/runs/bench/.kdet"
for cfg in $configs; do
  for seed in $seeds; do
    out="runs/bench/$cfg-seed$seed"
    if [ -f "$out/eval.json" ]; then
      echo "== $cfg seed $seed: done, skipped"
      continue
    fi
    if [ -f "$out/last.ckpt" ]; then
      echo "== $cfg seed $seed: resuming"
      "$bin" train --config "configs/$cfg.toml" --out "$out" --resume
    else
      echo "== $cfg seed $seed: training"
      "$bin" train --config "configs/$cfg.toml" --out "$out" --seed "$seed"
    fi
  done
done
# Inference speed: scripts/bench-infer.sh (kdet bench infer), best on an idle machine.
python3 "$root/scripts/bench/pair_table.py" runs/bench docs/benchmarks.md $configs
