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

# MGD / FBKD parity fixtures (tests/fixtures/distill/{mgd,fbkd}.json), computed by
# MMRazor's own loss and connector files (scripts/fixtures/mgd_fbkd.py). PyPI's Linux torch
# wheel is the CUDA build, so this pulls about 3.5 GB of NVIDIA libraries into the venv;
# only the CPU is used. The OpenMMLab packages come without their dependencies (OpenCV &
# co. are stood in for by scripts/weights/mmdet_stubs.py), plus the small pure-Python
# packages mmengine imports.
"$venv/bin/pip" install --quiet "torch==2.5.1" "numpy<3" "pillow<12"
"$venv/bin/pip" install --quiet --no-deps "mmrazor==1.0.0" "mmengine==0.10.4" \
  "mmcv-lite==2.1.0"
"$venv/bin/pip" install --quiet addict yapf termcolor rich pyyaml packaging six \
  terminaltables tqdm
"$venv/bin/python" "$root/scripts/fixtures/mgd_fbkd.py" "$root/tests/fixtures/distill"

# Operators of the query families (issue #16), in crates/kdet-models/tests/fixtures/ops/:
# point_sample / roi_align from PyTorch and torchvision (scripts/fixtures/sampling.py),
# Hungarian matching from scipy and transformers' ports of DETR's and Mask2Former's
# matchers (matching.py), the transformer blocks from transformers' Mask2Former decoder
# layer and sine encodings (transformer.py). transformers 4.47 is the last line that runs
# on torch 2.5.
"$venv/bin/pip" install --quiet "torchvision==0.20.1" "scipy==1.17.1" "transformers==4.47.1"
ops="$root/crates/kdet-models/tests/fixtures/ops"
"$venv/bin/python" "$root/scripts/fixtures/sampling.py" "$ops"
"$venv/bin/python" "$root/scripts/fixtures/matching.py" "$ops"
"$venv/bin/python" "$root/scripts/fixtures/transformer.py" "$ops"
"$venv/bin/python" "$root/scripts/fixtures/deformable.py" "$ops"
"$venv/bin/python" "$root/scripts/fixtures/set_criterion.py" "$ops"
