#!/usr/bin/env bash
# Times `kdet eval` (hotcoco) against pycocotools on a large generated COCO set, on this
# machine, and writes the section "## Evaluation speed" of docs/benchmarks.md. It also
# checks that both print the same 12 numbers. A benchmark, not a test: run it by hand.
#   bash scripts/bench-eval.sh            # 5000 images x 100 detections
#   BENCH_IMAGES=500 bash scripts/bench-eval.sh   # a quick run (does not touch the doc)
# Needs python3 with venv/pip and access to PyPI (pycocotools), and GNU time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
images=${BENCH_IMAGES:-5000}
dets=${BENCH_DETS:-100}
venv="$root/.venv-fixtures"
data="$root/target/bench-eval/${images}x${dets}"
doc="$root/docs/benchmarks.md"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "pycocotools==2.0.11" "numpy<3"
(cd "$root" && cargo build --quiet --release -p kdet-cli)
kdet="$root/target/release/kdet"

if [ ! -f "$data/DT.json" ]; then
  echo "generating $images images x $dets detections in $data"
  "$venv/bin/python" "$root/scripts/eval/bench_data.py" "$data" --images "$images" --dets "$dets"
fi

# Wall seconds and peak RSS (MiB) of a command; its stdout goes to $1.
timed() {
  local log=$1
  shift
  /usr/bin/time -f "%e %M" -o "$log.time" "$@" >"$log" 2>"$log.err"
  read -r secs kib <"$log.time"
  echo "$secs $((kib / 1024))"
}

rows=()
load=$(cut -d' ' -f1-3 /proc/loadavg)
for iou in bbox segm; do
  echo "== $iou"
  read -r k_s k_mb < <(timed "$data/kdet-$iou.log" "$kdet" eval --gt "$data/GT.json" --dt "$data/DT.json" --iou-type "$iou")
  echo "kdet eval:   ${k_s} s, ${k_mb} MiB"
  # hotcoco parallelises with rayon; one thread compares like with like.
  read -r k1_s _ < <(timed "$data/kdet1-$iou.log" env RAYON_NUM_THREADS=1 "$kdet" eval --gt "$data/GT.json" --dt "$data/DT.json" --iou-type "$iou")
  echo "kdet eval, 1 thread: ${k1_s} s"
  read -r p_s p_mb < <(timed "$data/pycocotools-$iou.log" "$venv/bin/python" "$root/scripts/eval/bench_pycocotools.py" \
    "$data/GT.json" "$data/DT.json" "$iou" mask)
  echo "pycocotools: ${p_s} s, ${p_mb} MiB"
  kdet_stats=$(grep "maxDets=" "$data/kdet-$iou.log" | sed 's/.*= //' | tr '\n' ' ')
  py_stats=$(grep "^STAT" "$data/pycocotools-$iou.log" | awk '{print $3}' | tr '\n' ' ')
  if [ "$kdet_stats" != "$py_stats" ]; then
    echo "MISMATCH for $iou:"
    echo "  kdet:        $kdet_stats"
    echo "  pycocotools: $py_stats"
    exit 1
  fi
  echo "same 12 numbers: $kdet_stats"
  rows+=("$iou|$k_s|$k1_s|$k_mb|$p_s|$p_mb|$kdet_stats")
done

if [ "$images" != 5000 ] || [ "$dets" != 100 ]; then
  echo "not the standard size: docs/benchmarks.md left as it is"
  exit 0
fi

gt_objects=$("$venv/bin/python" -c "import json,sys; print(len(json.load(open(sys.argv[1]))['annotations']))" "$data/GT.json")
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
"$venv/bin/python" - "$doc" "$images" "$dets" "$gt_objects" "$(nproc)" "$cpu" "$(rustc --version)" "$load" \
  "$("$venv/bin/python" -c 'import importlib.metadata as m; print("pycocotools", m.version("pycocotools"), "/ numpy", m.version("numpy"))')" \
  "$(python3 --version)" "${rows[@]}" <<'PY'
import os, re, sys
doc, images, dets, gt_objects, cores, cpu, rustc, load, pyver, python = sys.argv[1:11]
rows = [r.split("|") for r in sys.argv[11:]]
lines = [
    "## Evaluation speed",
    "",
    "`kdet eval` (hotcoco 1.3.1, release build) against pycocotools' `COCOeval` on a generated",
    f"COCO-style set: {int(images):,} images of 640x480, {int(gt_objects):,} ground-truth objects",
    f"(polygon masks, 80 categories, 1 % crowd) and {int(dets):,} detections per image",
    f"({int(images) * int(dets):,} in all, each with a box and a compressed-RLE mask). Both run end to",
    "end as a user would: read both JSON files, evaluate, accumulate, summarize (mask AP with the",
    "detection's mask area, detectron2's convention). Wall time and peak memory from GNU time,",
    "one run each, same machine, one after the other.",
    "",
    "| IoU type | kdet eval (s) | kdet eval, 1 thread (s) | peak MiB | pycocotools (s) | peak MiB | speed-up: all cores (1 thread) |",
    "|---|---:|---:|---:|---:|---:|---:|",
]
for iou, ks, k1s, kmb, ps, pmb, _ in rows:
    lines.append(
        f"| {iou} | {float(ks):.1f} | {float(k1s):.1f} | {kmb} | {float(ps):.1f} | {pmb} "
        f"| {float(ps) / float(ks):.0f}x ({float(ps) / float(k1s):.0f}x) |"
    )
lines += [
    "",
    "Both printed the same 12 numbers (6 decimals):",
    "",
]
for iou, *_, stats in rows:
    lines.append(f"- {iou}: `{stats.strip()}`")
lines += [
    "",
    f"Machine: {cores} cores ({cpu}); {rustc};",
    f"{python}, {pyver}.",
    f"Load average before the runs: {load} (a shared machine; other jobs may have been running).",
    "hotcoco uses every core (rayon), pycocotools one; the 1-thread column sets",
    "`RAYON_NUM_THREADS=1`. Reproduce with `bash scripts/bench-eval.sh` (it generates the set",
    "with `scripts/eval/bench_data.py`, seed 0, under `target/bench-eval/`, and rewrites this",
    "section).",
    "",
]
section = "\n".join(lines)
text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\nMeasured numbers, each with the command that produced it.\n"
pattern = re.compile(r"^## Evaluation speed\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip("\n") + "\n\n" + section
os.makedirs(os.path.dirname(doc), exist_ok=True)
with open(doc, "w") as f:
    f.write(text.rstrip("\n") + "\n")
print(f"updated {doc}")
PY
