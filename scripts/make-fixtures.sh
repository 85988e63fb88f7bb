#!/usr/bin/env bash
# Regenerates the reference fixtures made with Python tools. Run once by a developer;
# the outputs are committed and the test suite never needs Python.
#   bash scripts/make-fixtures.sh
# Needs python3 with venv/pip and access to PyPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/tests/data"  # the vendored real samples (tests/data/README.md)
venv="$root/.venv-fixtures"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "pycocotools==2.0.11" "numpy<3"
"$venv/bin/python" "$root/scripts/fixtures/coco_tiny_rles.py" \
  "$data/coco_tiny_val2017/annotations/instances_val2017.json" \
  "$root/tests/fixtures/coco_tiny_rles_pycocotools.json"
