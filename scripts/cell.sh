# One benchmark cell, resumable (sourced by scripts/bench-distill.sh,
# scripts/bench-mask-distill.sh and scripts/bench-noisy.sh):
#   run_cell BIN CONFIG TEACHER SEED OUT [DISTILL_ARG ...]
# A finished cell (OUT/eval.json exists) is skipped, an interrupted one continues from its
# last checkpoint, a new one runs `BIN distill --config CONFIG --teacher TEACHER --seed SEED
# --out OUT DISTILL_ARG...` (`--set` overrides: a resumed run reads them from its folder);
# a teacher-free recipe (its resolved experiment has no `[teacher]`, e.g. LGD) runs without
# `--teacher`.
run_cell() {
  local bin=$1 config=$2 teacher=$3 seed=$4 out=$5
  shift 5
  if [ -f "$out/eval.json" ]; then
    echo "== $out: done, skipped"
  elif [ -f "$out/last.ckpt" ]; then
    echo "== $out: resuming"
    "$bin" distill --out "$out" --resume
  else
    echo "== $out: distilling"
    local with_teacher=(--teacher "$teacher")
    if ! "$bin" config print --config "$config" | grep -q '^\[teacher\]'; then with_teacher=(); fi
    "$bin" distill --config "$config" "${with_teacher[@]}" --seed "$seed" --out "$out" "$@"
  fi
}
