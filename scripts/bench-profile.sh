#!/usr/bin/env bash
# Per-op profile of the default backend (issue #7): samples `kdet bench train` (LD recipe,
# one thread) with Linux perf and writes "## Where the time goes: per-op profile of
# burn-flex" in docs/benchmarks.md (scripts/bench/profile_table.py groups the samples by
# op). Installs Debian's linux-perf when perf is missing (needs root and apt).
#
#   bash scripts/bench-profile.sh          # ITERS=6
#
# Needs the seed-0 teacher of scripts/bench-pair.sh (runs/bench/gfl_synth_teacher-seed0).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
iters=${ITERS:-6}
if ! command -v perf > /dev/null; then
  apt-get install -y linux-perf > /dev/null
fi
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${KDET_BIN:-"$root/target/release/kdet"}
teacher=runs/bench/gfl_synth_teacher-seed0/last.ckpt
[ -f "$teacher" ] || { echo "missing $teacher: run scripts/bench-pair.sh first" >&2; exit 1; }
out=runs/bench/profile
mkdir -p "$out"
args=(bench train --config configs/distill/ld_gfl_synth.toml --teacher "$teacher"
  --iters "$iters" --warmup 1 --loader-batches 0 --threads 1)
# cpu-clock: a software event, available in VMs without hardware counters. DWARF stacks:
# release builds keep unwind tables but no frame pointers.
perf record -q -e cpu-clock -F 299 --call-graph dwarf,32768 -o "$out/perf.data" -- "$bin" "${args[@]}"
perf script -i "$out/perf.data" -F ip,sym 2> /dev/null |
  python3 "$root/scripts/bench/profile_table.py" docs/benchmarks.md "kdet ${args[*]}"
rm -f "$out/perf.data"
