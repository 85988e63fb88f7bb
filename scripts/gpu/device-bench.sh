#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu/ and .gl/ of scripts/gpu/build.sh
# carried: probes the Vulkan driver, then runs scripts/bench-torch.sh with kdet on
# `--device gpu:0` (burn's Vulkan backend) and the PyTorch reference on CUDA, writing the
# JSON files to $OUT (the run tool's folder; else runs/bench/torch-gpu). Back here:
#
#   python3 scripts/bench/torch_table.py FETCHED_DIR docs/benchmarks.md
#
# Settings as scripts/bench-torch.sh (REPEATS, ITERS, WARMUP); DEVICE (gpu:0).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
bin=/tmp/kdet-gpu
xz -dc .gpu/kdet.xz > "$bin" && chmod +x "$bin"
out=${OUT:-runs/bench/torch-gpu}
mkdir -p "$out"
# The probe: one small tensor on the GPU (a clear error when no Vulkan device opens).
"$bin" bench infer --config configs/gfl_synth_student.toml --iters 1 --warmup 0 \
  --device "${DEVICE:-gpu:0}" | tee "$out/probe.txt"
KDET_BIN=$bin KDET_DEVICE=${DEVICE:-gpu:0} TORCH_DEVICE=cuda PY=${PY:-python3} \
  TEACHER=assets/teacher/gfl_synth_teacher-seed0.ckpt STUDENT=.gpu/student.ckpt \
  OUT_DIR="$out" TABLE=0 bash scripts/bench-torch.sh
