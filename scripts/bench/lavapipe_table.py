"""Writes "## Vulkan backend on a software driver" in docs/benchmarks.md from the files of
scripts/gpu/lavapipe-check.sh (standard library only).

Usage: python3 lavapipe_table.py LAVAPIPE_DIR BENCHMARKS_MD
"""
import json
import sys
from pathlib import Path

from mdsection import replace_section

BEGIN = "## Vulkan backend on a software driver"


def last_log(run: Path) -> dict:
    """The last `metrics.jsonl` record with losses (the step-25 log of the resumed run)."""
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    rows = [r for r in rows if "losses" in r]
    if not rows:
        sys.exit(f"{run}/metrics.jsonl: no logged losses")
    return rows[-1]


def seconds(folder: Path, name: str) -> float:
    return float((folder / f"{name}.seconds").read_text())


def main() -> None:
    folder, md = Path(sys.argv[1]), Path(sys.argv[2])
    ev = {d: json.loads((folder / f"eval-{d}.json").read_text())["stats"] for d in ("cpu", "gpu")}
    logs = {d: last_log(folder / f"distill-{d}") for d in ("cpu", "gpu")}
    if logs["cpu"]["step"] != logs["gpu"]["step"]:
        sys.exit(f"the runs logged different steps: {logs['cpu']['step']} vs {logs['gpu']['step']}")
    rows = []
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        c, g = ev["cpu"][k], ev["gpu"][k]
        rows.append(f"| box {k}, shipped teacher, val split | {c:.4f} | {g:.4f} | {g - c:+.1e} |")
    worst = 0.0
    for k in sorted(logs["cpu"]["losses"]):
        if k.startswith("time."):
            continue
        c, g = logs["cpu"]["losses"][k], logs["gpu"]["losses"][k]
        rel = abs(g - c) / max(abs(c), 1e-12)
        worst = max(worst, rel)
        rows.append(f"| {k}, mean of steps 2-{logs['cpu']['step']} | {c:.5f} | {g:.5f} | {rel:.1e} rel. |")
    times = {d: (seconds(folder, f"eval-{d}"), seconds(folder, f"distill-{d}")) for d in ("cpu", "gpu")}
    section = [
        BEGIN,
        "",
        "A correctness check of the `--features vulkan` build without a GPU: Mesa's lavapipe",
        "(a Vulkan driver that runs on the CPU; Debian 12's mesa-vulkan-drivers) as the only",
        "Vulkan device, against the default CPU backend. Inference: the shipped teacher on the",
        "built-in val split (`kdet eval --checkpoint`). Training: one LD distill step on the CPU,",
        "then the same further steps from that checkpoint on each device (`kdet distill --resume",
        "--max-steps 25`); the losses are the logged means of those steps. Differences come from",
        "float summation order only. Produced by `bash scripts/gpu/lavapipe-check.sh`.",
        "",
        "| quantity | `--device cpu` (flex) | `--device gpu` (Vulkan, lavapipe) | difference |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Largest relative loss difference: {worst:.1e}. Wall-clock (2 shared cores; lavapipe is a",
        f"software driver, so these say nothing about GPU speed): eval {times['cpu'][0]:.0f} s on",
        f"flex vs {times['gpu'][0]:.0f} s on lavapipe; 24 distill steps {times['cpu'][1]:.0f} s vs",
        f"{times['gpu'][1]:.0f} s.",
        "",
    ]
    print(replace_section(md, section))


if __name__ == "__main__":
    main()
