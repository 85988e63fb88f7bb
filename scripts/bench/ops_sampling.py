"""Sampling ops against PyTorch (issue #16): runs kdet's `ops_bench` example and the same
ops in PyTorch / torchvision on the same CPU, both on one thread, and writes the
"## Sampling ops against PyTorch" section of docs/benchmarks.md.

Usage (from the repository root, with a python that has torch and torchvision):
  cargo build --release -p kdet-models --example ops_bench
  python scripts/bench/ops_sampling.py TARGET/release/examples/ops_bench docs/benchmarks.md \
      [WARMUP RUNS]

The cases and their shapes are those of crates/kdet-models/examples/ops_bench.rs (see its
header for why). Each case is timed forward only (`torch.no_grad()`; kdet's plain device) and
forward + backward to the feature map (kdet's autodiff device); the backward pass takes
`sum(output)` and reads the gradient back, as the example does. Median of RUNS after WARMUP.
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import roi_align

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mdsection import replace_section  # noqa: E402

HEADING = "## Sampling ops against PyTorch"


def rois(num, batch, size):
    """The example's boxes: the same 64-bit LCG, f32 arithmetic."""
    import numpy as np
    state = 16
    out = []

    def nxt():
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        return np.float32((state >> 40) / float(1 << 24))

    size = np.float32(size)
    for i in range(num):
        w = np.float32(8.0) + nxt() * (size - np.float32(8.0))
        h = np.float32(8.0) + nxt() * (size - np.float32(8.0))
        x = nxt() * (size - w)
        y = nxt() * (size - h)
        out.append([float(i % batch), float(x), float(y), float(x + w), float(y + h)])
    return torch.tensor(out, dtype=torch.float32)


def point_sample(inp, coords):
    """detectron2 `point_sample(input, point_coords, align_corners=False)`."""
    return F.grid_sample(inp, 2.0 * coords.unsqueeze(2) - 1.0, align_corners=False).squeeze(3)


def uncertain_points(logits, num_points=12544, oversample_ratio=3.0, importance=0.75):
    """detectron2 `get_uncertain_point_coords_with_randomness` + Mask2Former
    `calculate_uncertainty`, under no_grad as in Mask2Former."""
    n = logits.shape[0]
    num_sampled = int(num_points * oversample_ratio)
    coords = torch.rand(n, num_sampled, 2)
    unc = -(point_sample(logits, coords).abs())
    k = int(importance * num_points)
    idx = torch.topk(unc[:, 0, :], k=k, dim=1)[1]
    idx += (num_sampled * torch.arange(n))[:, None]
    coords = coords.view(-1, 2)[idx.view(-1), :].view(n, k, 2)
    return torch.cat([coords, torch.rand(n, num_points - k, 2)], dim=1)


def level_of(boxes, canonical_size=224.0, canonical_level=4, min_level=2, max_level=4):
    """detectron2 `assign_boxes_to_levels`."""
    size = torch.sqrt((boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]))
    lvl = torch.floor(canonical_level + torch.log2(size / canonical_size + 1e-8))
    return torch.clamp(lvl, min=min_level, max=max_level).to(torch.int64) - min_level


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times), max(times)


def torch_cases(warmup, runs):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    results = []

    def both(case, shape, op):
        x = torch.rand(shape)
        with torch.no_grad():
            results.append((case, "fwd", timed(lambda: op(x).sum().item(), warmup, runs)))

        def step():
            xa = x.clone().requires_grad_(True)
            op(xa).sum().backward()
            xa.grad.sum().item()
        results.append((case, "fwd+bwd", timed(step, warmup, runs)))

    for points in (12544, 196):
        coords = torch.rand(32, points, 2)
        both(f"point_sample [32,1,32,32] P={points}", (32, 1, 32, 32),
             lambda x, c=coords: point_sample(x, c))
    logits = torch.randn(32, 1, 32, 32) * 2.0
    with torch.no_grad():
        results.append(("uncertain points [32,1,32,32] P=12544", "fwd",
                        timed(lambda: uncertain_points(logits).sum().item(), warmup, runs)))
    boxes = rois(64, 8, 128.0)
    both("roi_align [8,64,16,16] R=64 7x7 sr=2", (8, 64, 16, 16),
         lambda x: roi_align(x, boxes, (7, 7), spatial_scale=1 / 8, sampling_ratio=2,
                             aligned=True))
    levels = level_of(boxes)

    def multi(x):
        maps = [x[:, :, o:o + s, o:o + s] for o, s in ((0, 32), (32, 16), (48, 8))]
        out = x.new_zeros(len(boxes), 64, 7, 7)
        for lvl, stride in enumerate((4, 8, 16)):
            sel = (levels == lvl).nonzero().squeeze(1)
            if len(sel):
                out = out.index_put((sel,), roi_align(
                    maps[lvl], boxes[sel], (7, 7), spatial_scale=1 / stride, sampling_ratio=2,
                    aligned=True))
        return out
    both("multi-level roi_align P2-P4 of [8,64,128,128] R=64 7x7 sr=2", (8, 64, 56, 56), multi)
    return results


NOTES = [
    "",
    "Reading the table:",
    "",
    "- **point_sample forward + backward at 12544 points stays well above 3× PyTorch**, on"
    " either path. What the time is (measured with a scratch timer on the dedicated path,"
    " one thread): the host loop that plans corners and weights, about 8–11 ms for 401k"
    " points; burn-flex's `select` of the 1.6M corners, about 10–16 ms, and its scatter-add"
    " backward about as much; burn-flex's own `grid_sample_2d` forward kernel is already"
    " 2.5–3.6× PyTorch's. Other runs of the same binary on this shared machine gave 40–75 ms"
    " for the dedicated path and 57–86 ms for the decomposition. The dedicated path replaced a first version built on `gather` over"
    " an expanded `[N, C, 4P]` index with i64 indices (107 ms) and was kept over a one-row"
    " `select` of 2×2 patches (no faster at 12544 points, 4× slower at 196).",
    "- **Not done: a fused backward as a custom burn autodiff op.** burn 0.22 allows one"
    " through its `extension` feature: a `#[backend_extension(Flex, Autodiff)]` trait, the"
    " forward on `Flex`, and for `Autodiff<Flex, C>` a hand-written `Backward` (as burn's"
    " `tests/backend_extension_runtime.rs` does), whose backward would scatter the upstream"
    " gradient into the map and form the grid gradient in one pass. It needs the `extension`"
    " feature on kdet-models' burn dependency and a rebuild of the burn crate chain; even"
    " then the forward stays on flex's kernel, so forward + backward would remain about"
    " 2.5–3× PyTorch at this size.",
    "- RoIAlign's backward is faster than torchvision's CPU kernel, which recomputes every"
    " sample's interpolation weights for each channel (`roi_align_backward_kernel_impl`);"
    " kdet plans the weights once per RoI on the host and runs one select and one"
    " scatter-add over all channels.",
    "- Multi-level RoIAlign uses detectron2's level rule with its defaults (canonical box 224"
    " at level 4): every box of a 128×128 image lands on P2 or P3.",
]


def main() -> None:
    binary, md = sys.argv[1], Path(sys.argv[2])
    warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    proc = subprocess.run([binary, str(warmup), str(runs)], env=env, check=True,
                          capture_output=True, text=True)
    kdet = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        kdet[(r["case"], r["path"], r["mode"])] = (r["median_ms"], r["min_ms"], r["max_ms"])
    theirs = {(c, m): t for c, m, t in torch_cases(warmup, runs)}

    lines = [
        HEADING,
        "",
        "Forward and forward + backward (to the feature map) of the sampling ops in `kdet-models`"
        " `ops/` (burn-flex, release) and the same ops in PyTorch (`F.grid_sample`, torchvision's"
        " `roi_align`), one thread each (`RAYON_NUM_THREADS=1`, `torch.set_num_threads(1)`),"
        f" median ms of {runs} runs after {warmup} warm-up runs (min–max in brackets). Shapes"
        " are those of Mask2Former-lite / a RoI head on the built-in 128×128 images, batch 8"
        " (why each: `crates/kdet-models/examples/ops_bench.rs`).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, **shared with two training runs**"
        " while this ran, so absolute numbers are upper bounds and the ratios approximate."
        f" PyTorch {torch.__version__}, torchvision {torchvision.__version__}.",
        "",
        "Produced by:",
        "",
        "```",
        "cargo build --release -p kdet-models --example ops_bench",
        f"python scripts/bench/ops_sampling.py target/release/examples/ops_bench"
        f" docs/benchmarks.md {warmup} {runs}",
        "```",
        "",
        "`point_sample` forward + backward is shown for both of kdet's paths: the dedicated"
        " backward (`point_sample` on an autodiff device: host-computed corners and weight"
        " derivatives, a short graph) and burn's own gradient of `grid_sample_2d` (its"
        " reference decomposition, `point_sample_grid_decomposed`).",
        "",
        "| case | kdet path | mode | kdet ms | PyTorch ms | kdet / PyTorch |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (case, path, mode), k in kdet.items():
        t = theirs.get((case, mode))
        if t is None:
            continue
        lines.append(f"| {case} | {path or '–'} | {mode} | {k[0]:.3f} ({k[1]:.3f}–{k[2]:.3f}) |"
                     f" {t[0]:.3f} ({t[1]:.3f}–{t[2]:.3f}) | {k[0] / t[0]:.1f}× |")
    lines += NOTES
    print(replace_section(md, lines))


if __name__ == "__main__":
    main()
