"""Writes "## Inference speed of the detector pair" in docs/benchmarks.md from the
`kdet bench infer --out` JSON files of scripts/bench-infer.sh (standard library only).

Usage: python3 infer_table.py INFER_DIR BENCHMARKS_MD

Per (config, batch): the median over every file (seeds x repeats) of each file's median
ms/image; ratio = teacher / student.
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

BEGIN = "## Inference speed of the detector pair"


def main() -> None:
    folder, md = Path(sys.argv[1]), Path(sys.argv[2])
    cells = defaultdict(list)
    params = {}
    for f in sorted(folder.glob("*.json")):
        m = re.match(r"(.+)-seed(\d+)-b(\d+)-r(\d+)\.json", f.name)
        if not m:
            continue
        doc = json.loads(f.read_text())
        key = (m.group(1), int(m.group(3)))
        cells[key].append((doc["forward_ms_per_image"]["median"], doc["total_ms_per_image"]["median"]))
        params[m.group(1)] = doc["parameters"]
    rows = []
    for b in sorted({k[1] for k in cells}):
        t = cells.get(("gfl_synth_teacher", b), [])
        s = cells.get(("gfl_synth_student", b), [])
        if not t or not s:
            continue
        tf, tt = statistics.median(x[0] for x in t), statistics.median(x[1] for x in t)
        sf, st = statistics.median(x[0] for x in s), statistics.median(x[1] for x in s)
        rows.append(f"| {b} | {tf:.2f} / {tt:.2f} | {sf:.2f} / {st:.2f} | {tf / sf:.2f}x / {tt / st:.2f}x | {len(t)} / {len(s)} |")
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    pt, ps = params.get("gfl_synth_teacher"), params.get("gfl_synth_student")
    section = [
        BEGIN,
        "",
        "`kdet bench infer` on the trained checkpoints of the main pair (128×128 input, random",
        "pixels, release build, burn-flex CPU): forward / forward + post-processing (decode,",
        "top-k, NMS, 100 detections per image), ms per image; median over every measurement",
        "(seeds × repeated processes, each the median of 30 timed batches after 5 warm-up",
        "batches). Teacher and student runs interleave.",
        f"Parameters: teacher {pt:,}, student {ps:,} ({pt / ps:.1f}x)." if pt and ps else "",
        f"Machine: {cpu} cores, {platform.machine()}. Produced by `bash scripts/bench-infer.sh`.",
        "",
        "| batch | teacher ms/image | student ms/image | teacher / student | measurements |",
        "|---:|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    new = replace_section(md, section)
    print(new)


if __name__ == "__main__":
    main()
