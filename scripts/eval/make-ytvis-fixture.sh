#!/usr/bin/env bash
# Regenerates tests/fixtures/eval/ytvis_synth_{gt,dt,reference}.json: synthetic YouTube-VIS
# ground truth (`kdet data synth --video`), perturbed predictions, and the numbers of the
# reference evaluator (the youtubevos COCO API fork, as shipped in mmdet 3.3.0). Run once by a
# developer; the outputs are committed and `cargo test -p kdet-eval` needs no Python.
#   bash scripts/eval/make-ytvis-fixture.sh
# Needs python3 with venv/pip and access to PyPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.venv-fixtures"
ref="$venv/ytvis-reference"
out="$root/tests/fixtures/eval"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "pycocotools==2.0.11" "numpy<3"
# Only two pure-Python files of the mmdet wheel are used (they need numpy and pycocotools);
# the wheel is downloaded without its dependencies and never installed.
if [ ! -f "$ref/ytviseval.py" ]; then
  mkdir -p "$ref"
  "$venv/bin/pip" download --quiet --no-deps "mmdet==3.3.0" -d "$ref/wheel"
  "$venv/bin/python" - "$ref" <<'PY'
import glob, sys, zipfile
ref = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{ref}/wheel/mmdet-3.3.0-*.whl")[0])
for name in ("ytvis.py", "ytviseval.py"):
    with open(f"{ref}/{name}", "wb") as f:
        f.write(wheel.read(f"mmdet/evaluation/functional/{name}"))
PY
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && cargo run --quiet -p kdet-cli -- data synth --out "$tmp/synth" --video \
  --images 1 --val-images 6 --size 288 --frames 5 --seed 3)
"$venv/bin/python" "$root/scripts/eval/ytvis_parity.py" "$ref" "$tmp/synth/val/instances.json" "$out"
ls -l "$out"
