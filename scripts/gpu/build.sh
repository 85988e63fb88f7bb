#!/usr/bin/env bash
# Here (x86-64, with the Rust toolchain): everything a GPU machine needs to run kdet's
# Vulkan backend, in .gpu/ and .gl/ (both git-ignored), for `run` to carry:
#
#   bash scripts/gpu/build.sh
#   run --carry .gpu .gl -- bash scripts/gpu/device-bench.sh      (see docs/gpu.md)
#
# - .gpu/kdet.xz: `cargo build --profile gpu -p kdet-cli --no-default-features --features
#   vulkan` (release code, stripped: 127 MB, 21.6 MB compressed when measured; target/gpu;
#   see docs/gpu.md for build times), xz-compressed. Without the default `shipped-teacher`
#   feature: the teacher already travels in the tree, and embedding it would add ~25 MB to
#   the 64 MiB a device run carries;
# - .gpu/student.ckpt: the seed-0 student of scripts/bench-pair.sh (the teacher travels as
#   the tracked assets/teacher/gfl_synth_teacher-seed0.ckpt);
# - .gl/*.deb: Debian's Vulkan loader and GL dispatch libraries, which the GPU machine's
#   image lacks (the NVIDIA driver there brings its own Vulkan driver).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
CARGO_TARGET_DIR=target/gpu cargo build --profile gpu -p kdet-cli --no-default-features --features vulkan
mkdir -p .gpu
xz -T0 -6 -c target/gpu/gpu/kdet > .gpu/kdet.xz.tmp && mv .gpu/kdet.xz.tmp .gpu/kdet.xz
student=runs/bench/gfl_synth_student-seed0/last.ckpt
[ -f "$student" ] || { echo "missing $student: run scripts/bench-pair.sh first" >&2; exit 1; }
cp "$student" .gpu/student.ckpt
if [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then
  mkdir -p .gl /tmp/kdet-apt-amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/kdet-apt-amd64'
  apt-get $o update > /dev/null
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -ch .gpu/kdet.xz .gpu/student.ckpt .gl/*.deb | tail -1
echo "carry: .gpu .gl (64 MiB at most)"
