"""Writes the "## Detector pair on the built-in data" section of docs/benchmarks.md from
runs/bench/<config>-seed<seed>/{eval.json,metrics.jsonl} (standard library only).

Usage: python3 pair_table.py RUNS_DIR BENCHMARKS_MD CONFIG [CONFIG ...]
"""
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from mdsection import replace_section

STATS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def cell(run: Path):
    ev = json.loads((run / "eval.json").read_text())
    stats = ev["report"]["stats"][:6]
    elapsed = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "elapsed_s" in rec:
            elapsed = rec["elapsed_s"]
    return stats, elapsed


def fmt(values, scale=100.0, digits=1):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def main() -> None:
    runs, md, configs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    rows, per_cfg = [], {}
    for cfg in configs:
        cells = sorted(runs.glob(f"{cfg}-seed*"))
        done = [c for c in cells if (c / "eval.json").exists()]
        results = [cell(c) for c in done]
        per_cfg[cfg] = results
        seeds = ", ".join(c.name.rsplit("seed", 1)[1] for c in done)
        stat_cols = [fmt([r[0][i] for r in results]) for i in range(6)]
        train = fmt([r[1] for r in results], scale=1 / 60.0)
        rows.append(f"| {cfg} | {seeds} | " + " | ".join(stat_cols) + f" | {train} |")
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    section = [
        "## Detector pair on the built-in data",
        "",
        "The shipped GFL teacher/student pair (`configs/gfl_synth_teacher.toml`,",
        "`configs/gfl_synth_student.toml`) trained on the built-in 128×128 data",
        "(1000 train / 250 val images, seed 0 data) and evaluated on the val split (bbox,",
        "COCO protocol, ×100, mean ± sample std over seeds). Train time is the",
        "training loop's wall time in minutes (release build, burn-flex CPU; the machine was",
        "shared with builds and other runs, so it is an upper bound). Inference speed: the",
        "next section.",
        f"Machine: {cpu} cores, {platform.processor() or platform.machine()}. Produced by",
        "`bash scripts/bench-pair.sh` (resumable; `SEEDS=\"0\"` for one seed).",
        "",
        "| config | seeds | AP | AP50 | AP75 | APs | APm | APl | train (min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    print(replace_section(md, section))


if __name__ == "__main__":
    main()
