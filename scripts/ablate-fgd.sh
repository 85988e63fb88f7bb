#!/usr/bin/env bash
# The FGD ablation on the built-in data (issue #21): the FGD recipe at FGD's official
# coefficients (configs/distill/fgd_gfl_synth.toml as shipped before issue #21: temperature
# 0.5, gamma 5e-4, lambda 5e-6; variant fgd-official) with one thing changed per variant
# (fgd-t2_x65 is the recipe shipped since: its cells are the benchmark's FGD cells,
# runs/bench/distill/fgd-seed<S>), each cell the
# benchmark's schedule, teacher, data order and val split (scripts/bench-distill.sh), into
# runs/ablate/<variant>-seed<S>/. The table "## FGD ablation" in docs/benchmarks.md
# compares them with the baseline and FGD cells of runs/bench/distill/.
#
#   bash scripts/ablate-fgd.sh                      # every variant, seeds 0 1
#   VARIANTS="fgd-x65" SEEDS="0" bash scripts/ablate-fgd.sh
#   bash scripts/ablate-fgd.sh --list               # the variants and what they change
#
# Resumable: a finished cell (its eval.json exists) is skipped, an interrupted one continues
# from its last checkpoint. Two cells at once, one compute thread each, are faster on a
# 2-core machine than one after the other: run two of these with disjoint VARIANTS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
F=configs/distill/fgd_gfl_synth.toml
B=configs/distill/baseline_gfl_synth.toml
L=distill.losses.0.loss
# 65 = 1333x800 / (128x128): how many more positions a COCO image has than a built-in one.
# FGD's global loss is a sum over positions and its attention loss a sum over positions
# (spatial) and channels, with coefficients tuned on COCO; its focal losses are not
# (the masks give each object, and the background, a total weight of about 1).
narrow=(--set model.neck.out_channels=32 --set model.head.feat_channels=32)

official() { # the recipe at FGD's official temperature and coefficients
  echo "$F"; printf '%s\n' --set $L.temperature=0.5 --set $L.gamma_attention=5e-4 \
    --set $L.lambda_global=5e-6
}
variant() { # name -> config, then --set arguments, one per line
  case $1 in
    fgd-official) # the reference: FGD's official temperature and coefficients
      official ;;
    fgd-inherit_only) # the inherited neck and head alone: FGD's weight 0
      official; printf '%s\n' --set distill.losses.0.weight=0 ;;
    fgd-no_inherit) # FGD's loss without copying the teacher's neck and head
      official; printf '%s\n' --set distill.inherit=false ;;
    fgd-focal_only) # the focal losses (fg + bg) alone
      official; printf '%s\n' --set $L.gamma_attention=0 --set $L.lambda_global=0 ;;
    fgd-attention_only_x65) # the attention loss alone, at gamma x 65
      official; printf '%s\n' --set $L.alpha_fg=0 --set $L.beta_bg=0 --set $L.lambda_global=0 \
        --set $L.gamma_attention=3.25e-2 ;;
    fgd-global_only_x65) # the global (GcBlock) loss alone, at lambda x 65
      official; printf '%s\n' --set $L.alpha_fg=0 --set $L.beta_bg=0 --set $L.gamma_attention=0 \
        --set $L.lambda_global=3.25e-4 ;;
    fgd-t2) # temperature 2 instead of 0.5: a spatial attention that is not one-hot here
      official; printf '%s\n' --set $L.temperature=2 ;;
    fgd-x65) # every term, with gamma and lambda scaled to the positions of a COCO image
      official; printf '%s\n' --set $L.gamma_attention=3.25e-2 --set $L.lambda_global=3.25e-4 ;;
    fgd-t2_x65) # both changes: temperature 2, gamma and lambda x 65
      official; printf '%s\n' --set $L.temperature=2 --set $L.gamma_attention=3.25e-2 \
        --set $L.lambda_global=3.25e-4 ;;
    fgd-p3) # the taps: P3 alone (stride 8, where the small objects are) instead of P3-P5
      official; printf '%s\n' --set 'distill.losses.0.levels=[0]' ;;
    fgd-shipped_p3) # the shipped recipe's taps: P3 alone instead of P3-P5
      echo "$F"; printf '%s\n' --set 'distill.losses.0.levels=[0]' ;;
    fgd-shipped_backbone) # the shipped recipe on backbone C3-C5 (1x1 connector to the teacher's widths)
      echo "$F"; printf '%s\n' --set distill.losses.0.student=backbone \
        --set distill.losses.0.teacher=backbone --set distill.losses.0.connector=conv1x1 ;;
    fgd-frozen_tgc) # the shipped recipe with the teacher-side GcBlocks frozen at init (identity)
      echo "$F"; printf '%s\n' --set $L.teacher_gcblock_trains=false ;;
    baseline-narrow) # the heterogeneous student alone: half-width neck and head
      echo "$B"; printf '%s\n' "${narrow[@]}" ;;
    fgd-narrow) # FGD into it: a 1x1 connector (FGD's align), nothing to inherit
      official; printf '%s\n' "${narrow[@]}" --set distill.inherit=false \
        --set distill.losses.0.connector=conv1x1 ;;
    fgd-shipped_narrow) # the shipped recipe into it, the same way
      echo "$F"; printf '%s\n' "${narrow[@]}" --set distill.inherit=false \
        --set distill.losses.0.connector=conv1x1 ;;
    *) echo "ablate-fgd.sh: unknown variant $1 (--list)" >&2; return 1 ;;
  esac
}
all="fgd-official fgd-inherit_only fgd-no_inherit fgd-t2 fgd-focal_only fgd-attention_only_x65
  fgd-global_only_x65 fgd-x65 fgd-t2_x65 fgd-p3 fgd-shipped_p3 fgd-shipped_backbone
  fgd-frozen_tgc baseline-narrow fgd-narrow fgd-shipped_narrow"
if [ "${1:-}" = --list ]; then
  for v in $all; do
    echo "$v: $(grep -A1 "^    $v)" "$0" | head -1 | sed 's/.*# //')"
    variant "$v" | tail -n +2 | paste -sd' ' | sed 's/^/    /'
  done
  exit 0
fi
variants=${VARIANTS:-$all}
seeds=${SEEDS:-"0 1"}
teacher=${TEACHER:-assets/teacher/gfl_synth_teacher-seed0.ckpt}
if [ -z "${KDET_BIN:-}" ]; then cargo build --release --quiet; fi
mkdir -p runs/ablate
# The teacher's attention and the focal masks' weights at FGD's temperature and others
# (crates/kdet-run/examples/fgd_probe.rs): the table's "attention" block.
if [ ! -f runs/ablate/probe.txt ]; then
  cargo run --release --quiet --example fgd_probe -p kdet-run -- 8 0.5 1 2 5 >runs/ablate/probe.txt
fi
# A private copy, replaced by rename: cells still running keep the old file.
cp "${KDET_BIN:-target/release/kdet}" runs/ablate/.kdet.new && mv -f runs/ablate/.kdet.new runs/ablate/.kdet
bin="$root/runs/ablate/.kdet"
for v in $variants; do
  mapfile -t spec < <(variant "$v")
  [ "${#spec[@]}" -gt 0 ] || exit 1
  for seed in $seeds; do
    out="runs/ablate/$v-seed$seed"
    # The shipped recipe: its cells are the benchmark's FGD cells (scripts/bench-distill.sh).
    [ "$v" = fgd-t2_x65 ] && out="runs/bench/distill/fgd-seed$seed" && mkdir -p runs/bench/distill
    if [ -f "$out/eval.json" ]; then
      echo "== $out: done, skipped"
    elif [ -f "$out/last.ckpt" ]; then
      echo "== $out: resuming"
      "$bin" distill --out "$out" --resume >>"$out.log" 2>&1
    else
      echo "== $out: distilling (log: $out.log)"
      "$bin" distill --config "${spec[0]}" "${spec[@]:1}" --teacher "$teacher" --seed "$seed" \
        --out "$out" >"$out.log" 2>&1
    fi
  done
done
# The recipe shipped since issue #21 was chosen on the tuning split of scripts/tune-distill.sh
# (never the reported val split): the seed-0 cells of the official coefficients and of the
# three candidates, scored there (runs/tune/eval/<variant>.json; the table prints them).
tune_data=data/synth-tune
for v in fgd-official fgd-t2 fgd-x65 fgd-t2_x65; do
  run="runs/ablate/$v-seed0" score="runs/tune/eval/$v.json"
  [ "$v" = fgd-t2_x65 ] && run="runs/bench/distill/fgd-seed0"
  [ -f "$run/eval.json" ] && [ ! -f "$score" ] || continue
  if [ ! -f "$tune_data/val/annotations.json" ]; then
    "$bin" data synth --out "$tune_data" --seed 1 --images 8 --val-images 250
  fi
  mkdir -p runs/tune/eval
  "$bin" eval --checkpoint "$run/last.ckpt" --data "$tune_data" --out "$score.tmp" >/dev/null
  mv "$score.tmp" "$score"
done
# TABLE=0: leave docs/benchmarks.md alone (several of these running at once).
if [ "${TABLE:-1}" = 1 ]; then python3 scripts/bench/fgd_ablation_table.py runs docs/benchmarks.md; fi
