"""Writes "## Distillation step overhead" in docs/benchmarks.md from the
`kdet bench train --out` JSON files of scripts/bench-train.sh (standard library only).

Usage: python3 train_table.py TRAIN_DIR BENCHMARKS_MD

Per method: each process gives medians of the student step, teacher forward and distill
step (interleaved on the same batches) and its overhead distill / (student + teacher);
the table shows the median over processes of each, and the overhead's mean ± std over
processes.
"""
import json
import platform
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from mdsection import replace_section

BEGIN = "## Distillation step overhead"


def main() -> None:
    folder, md = Path(sys.argv[1]), Path(sys.argv[2])
    cells = defaultdict(list)
    first = None
    for f in sorted(folder.glob("*.json")):
        m = re.match(r"(.+)-r(\d+)\.json", f.name)
        if not m:
            continue
        doc = json.loads(f.read_text())
        first = first or doc
        cells[m.group(1)].append(doc)
    rows = []
    for method, docs in sorted(cells.items()):
        med = lambda key: statistics.median(d["ms"][key]["median"] for d in docs)
        kd = [d["ms"]["distill_kd_terms"]["median"] for d in docs if d["ms"]["distill_kd_terms"]]
        over = [d["overhead"] for d in docs]
        sd = statistics.stdev(over) if len(over) > 1 else float("nan")
        peak = max((d["peak_rss_mib"]["distill_step"] or 0) for d in docs)
        rows.append(
            f"| {method} | {med('student_step'):.0f} | {med('teacher_forward'):.0f} | "
            f"{med('distill_step'):.0f} | {statistics.median(kd) if kd else float('nan'):.1f} | "
            f"{statistics.mean(over):.3f} ± {sd:.3f} | {len(docs)} | {peak:.0f} |"
        )
    loader = [d["loader_images_per_s"] for docs in cells.values() for d in docs if d.get("loader_images_per_s")]
    steps = [d["ms"]["student_step"]["median"] for docs in cells.values() for d in docs]
    consumed = (first["batch"] * 1000 / min(steps)) if steps else 1.0
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    b = first["batch"] if first else "?"
    side = first["input_size"] if first else ["?", "?"]
    section = [
        BEGIN,
        "",
        "`kdet bench train` on the built-in data (release build, burn-flex CPU): per step, ms;",
        f"batch {b} of {side[0]}×{side[1]}, the main pair (seed-0 teacher of `scripts/bench-pair.sh`).",
        "Each process times the student step (`kdet train`'s step), the teacher forward and the",
        "distill step (`kdet distill`'s step) on the same batches in a rotating order, medians of",
        "20 iterations after 3 warm-up ones; the table gives the median over processes, and",
        "overhead = distill / (student + teacher) as mean ± std over processes. 'KD terms' is the",
        "time of the recipe's losses inside the distill step. Peak RSS: the largest over processes.",
        f"Machine: {cpu} cores, {platform.machine()}. Produced by `bash scripts/bench-train.sh`.",
        "",
        "| recipe | student step | teacher forward | distill step | KD terms | overhead | processes | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        (f"Data loader alone (the training loader: workers, flip, batching): "
         f"{statistics.median(loader):.0f} images/s (median of {len(loader)} cold starts), "
         f"{statistics.median(loader) / consumed:.0f}x the {consumed:.0f} images/s the fastest "
         f"student step consumes." if loader else ""),
        "",
    ]
    print(replace_section(md, section))


if __name__ == "__main__":
    main()
