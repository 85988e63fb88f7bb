#!/usr/bin/env bash
# Runs a command with Mesa's lavapipe — a Vulkan driver that runs on the CPU — as the only
# Vulkan device, so that a `--features vulkan` kdet can be checked on a machine without a
# GPU (results, not speed: lavapipe is far slower than kdet's own CPU backend).
# Status: lavapipe (Mesa 22.3.6 and 25.0.7) segfaults on kdet's first Vulkan kernel
# (docs/gpu.md): this reproduces that crash until its cause is found.
#
#   bash scripts/gpu/lavapipe.sh target/gpu/gpu/kdet bench infer --config ... --device gpu
#
# Debian 12's libvulkan1 (the loader) and mesa-vulkan-drivers are downloaded once from the
# Debian archive into .lavapipe/ (git-ignored) and unpacked there; nothing is installed
# system-wide. `--device gpu` then finds lavapipe through CUBECL_WGPU_DEFAULT_DEVICE=Cpu.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir="$root/.lavapipe"
lib="$dir/root/usr/lib/x86_64-linux-gnu"
if [ ! -f "$dir/lvp_icd.json" ]; then
  mkdir -p "$dir/debs" "$dir/lists/partial" "$dir/root"
  o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$dir/lists"
  apt-get $o update > /dev/null
  (cd "$dir/debs" && apt-get $o download libvulkan1 mesa-vulkan-drivers)
  for f in "$dir"/debs/*.deb; do dpkg -x "$f" "$dir/root"; done
  # The driver manifest names the system path of the driver; point it at the unpacked one.
  sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$lib/libvulkan_lvp.so\"|" \
    "$dir/root/usr/share/vulkan/icd.d/lvp_icd.x86_64.json" > "$dir/lvp_icd.json"
fi
export VK_DRIVER_FILES="$dir/lvp_icd.json" VK_ICD_FILENAMES="$dir/lvp_icd.json"
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUBECL_WGPU_DEFAULT_DEVICE=${CUBECL_WGPU_DEFAULT_DEVICE:-Cpu}
exec "$@"
