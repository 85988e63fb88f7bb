#!/usr/bin/env bash
# Checks that a refactor moved nothing a user can measure: runs the first steps of every
# shipped synthetic distillation recipe (and the baseline) with two kdet binaries, logging
# the losses at every step, and compares every logged loss term and total bit for bit
# (timings are not compared: `timings`, or `time.*` among the losses of earlier versions).
#   [METHODS="ld pkd"] bash scripts/check-same-training.sh OLD_KDET NEW_KDET [STEPS] [WORK_DIR]
# Run it from the repository root (configs/ and assets/teacher/ are read from here; set
# OLD_ROOT to another checkout when the old binary needs that checkout's configs); the
# built-in data is written to WORK_DIR/data/synth when missing. Exit 0 when every method's
# losses agree. Pair it with `kdet demo --quick` (its printed weight CRCs) for the whole
# pipeline.
set -euo pipefail
old=$(realpath "$1") new=$(realpath "$2") steps=${3:-6} work=${4:-runs/check-same-training}
root=$(pwd)
old_root=$(realpath "${OLD_ROOT:-$root}")
mkdir -p "$work"
work=$(realpath "$work")
teacher="$root/assets/teacher/gfl_synth_teacher-seed0.ckpt"
methods=${METHODS:-$("$new" config methods 2>/dev/null || echo logit_kd fitnet cwd pkd fgd ld frs pgd)}
[ -d "$work/data/synth" ] || "$new" data synth --out "$work/data/synth" >/dev/null
status=0
for m in baseline $methods; do
  [ -f "$root/configs/distill/${m}_gfl_synth.toml" ] || continue
  for side in old new; do
    bin=$old from=$old_root
    [ "$side" = new ] && bin=$new from=$root
    printf 'extends = "%s/configs/distill/%s_gfl_synth.toml"\n[train]\nlog_every = 1\n' "$from" "$m" >"$work/$side-$m.toml"
    rm -rf "$work/$side-$m"
    (cd "$work" && RAYON_NUM_THREADS=1 "$bin" distill --config "$work/$side-$m.toml" --teacher "$teacher" \
      --max-steps "$steps" --out "$work/$side-$m" >"$work/$side-$m.log" 2>&1) || {
      # A method newer than the old binary cannot be compared; the new one must run.
      echo "$m: the $side binary failed (see $work/$side-$m.log)"
      [ "$side" = new ] && status=1
      continue 2; }
  done
  python3 - "$work/old-$m/metrics.jsonl" "$work/new-$m/metrics.jsonl" "$m" <<'PY' || status=1
import json, sys
def terms(path):
    rows = []
    for line in open(path):
        r = json.loads(line)
        if "losses" in r:
            rows.append({k: v for k, v in r["losses"].items() if not k.startswith("time.")} | {"total": r.get("total")})
    return rows
a, b = terms(sys.argv[1]), terms(sys.argv[2])
same = a == b and len(a) > 0
print(f"{sys.argv[3]}: {len(a)} steps, {'identical' if same else 'DIFFERENT'}")
sys.exit(0 if same else 1)
PY
done
exit $status
