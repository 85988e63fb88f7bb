#!/usr/bin/env bash
# Checks kdet's Vulkan path (`--features vulkan`, `--device gpu`) on a machine without a
# GPU, against the CPU backend, with Mesa's lavapipe as the Vulkan driver
# (scripts/gpu/lavapipe.sh), and writes "## Vulkan backend on a software driver" in
# docs/benchmarks.md:
# 1. inference: the shipped teacher evaluated on the built-in val split on both devices
#    (`kdet eval --checkpoint`): same AP expected, up to float summation order;
# 2. training: one LD distill step on the CPU, then the same 24 further steps from that
#    checkpoint on each device (`kdet distill --resume --max-steps 25`): the logged losses
#    of steps 2-25 should agree closely (same weights, optimizer state and batches).
#
#   bash scripts/gpu/lavapipe-check.sh      # KDET_GPU_BIN=path to skip the build
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ -z "${KDET_GPU_BIN:-}" ]; then
  CARGO_TARGET_DIR=target/gpu cargo build --profile gpu -p kdet-cli --features vulkan
fi
bin=${KDET_GPU_BIN:-"$root/target/gpu/gpu/kdet"}
lvp=(bash "$root/scripts/gpu/lavapipe.sh")
# timed NAME COMMAND...: runs it, writing its wall-clock seconds to $out/NAME.seconds.
timed() {
  local name=$1 t0
  shift
  t0=$(date +%s.%N)
  "$@"
  awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }' > "$out/$name.seconds"
}
out=runs/bench/lavapipe
teacher=assets/teacher/gfl_synth_teacher-seed0.ckpt
rm -rf "$out" && mkdir -p "$out"
# (Also writes the built-in data when missing.)
echo "== one distill step on the CPU"
"$bin" distill --config configs/distill/ld_gfl_synth.toml --teacher "$teacher" --seed 0 \
  --out "$out/start" --max-steps 1 > /dev/null
for dev in cpu gpu; do
  echo "== eval on --device $dev"
  if [ "$dev" = cpu ]; then run=("$bin"); else run=("${lvp[@]}" "$bin"); fi
  timed "eval-$dev" "${run[@]}" eval --checkpoint "$teacher" \
    --data data/synth --device "$dev" --out "$out/eval-$dev.json" | tail -3
done
for dev in cpu gpu; do
  echo "== steps 2-25 on --device $dev"
  cp -r "$out/start" "$out/distill-$dev"
  if [ "$dev" = cpu ]; then run=("$bin"); else run=("${lvp[@]}" "$bin"); fi
  timed "distill-$dev" "${run[@]}" distill \
    --out "$out/distill-$dev" --resume --max-steps 25 --device "$dev" | tail -2
done
python3 scripts/bench/lavapipe_table.py "$out" docs/benchmarks.md
