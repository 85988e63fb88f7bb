"""Writes "## kdet against PyTorch" (CPU runs) or "## kdet against PyTorch on a GPU" in
docs/benchmarks.md from the JSON files of scripts/bench-torch.sh (standard library only).

Usage: python3 torch_table.py TORCH_DIR BENCHMARKS_MD

Each row: the median over rounds of each process's median, kdet and PyTorch, and
kdet / PyTorch (above 1: kdet is slower).
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

BEGIN = "## kdet against PyTorch"
GPU_BEGIN = "## kdet against PyTorch on a GPU"


def main() -> None:
    folder, md = Path(sys.argv[1]), Path(sys.argv[2])
    kdet, torch = defaultdict(list), defaultdict(list)
    version = threads = None
    # What ran: kdet's backend and --device, PyTorch's device (files from before the
    # `--device` options ran on the CPU).
    kdet_dev, torch_dev = set(), set()
    for f in sorted(folder.glob("*.json")):
        doc = json.loads(f.read_text())
        if f.name.startswith("kdet-train-"):
            kdet_dev.add((doc.get("backend", "flex"), doc.get("device", "cpu")))
            for k in ("student_step", "teacher_forward", "distill_step"):
                kdet[k].append(doc["ms"][k]["median"])
        elif m := re.match(r"kdet-infer-(\w+)-b(\d+)-r\d+\.json", f.name):
            kdet[f"infer_{m.group(1)}_b{m.group(2)}"].append(doc["forward_ms_per_image"]["median"])
        elif f.name.startswith("torch-"):
            version, threads = doc["torch_version"], doc["threads"]
            torch_dev.add((doc.get("device", "cpu"), doc.get("device_name", "")))
            steps = (doc["iters"], doc["warmup"])
            t = doc["timings"]
            for k in ("student_step", "teacher_forward", "distill_step"):
                torch[k].append(t[f"{k}_ms"]["median"])
            for net, per in t["infer_forward_ms_per_image"].items():
                for b, v in per.items():
                    torch[f"infer_{net}_b{b.removeprefix('batch')}"].append(v["median"])
    if version is None or not kdet:
        sys.exit(f"{folder}: needs kdet-*.json and torch-*.json files of scripts/bench-torch.sh")
    labels = [
        ("student_step", "student train step (fwd + GFL loss + bwd + AdamW), ms"),
        ("teacher_forward", "teacher forward (eval, no grad), ms"),
        ("distill_step", "LD distill step (teacher fwd + student step + LD), ms"),
        ("infer_teacher_b1", "teacher inference forward, batch 1, ms/image"),
        ("infer_student_b1", "student inference forward, batch 1, ms/image"),
        ("infer_teacher_b8", "teacher inference forward, batch 8, ms/image"),
        ("infer_student_b8", "student inference forward, batch 8, ms/image"),
    ]
    rows = []
    for key, label in labels:
        if not kdet.get(key) or not torch.get(key):
            continue
        k, t = statistics.median(kdet[key]), statistics.median(torch[key])
        rows.append(f"| {label} | {k:.1f} | {t:.1f} | {k / t:.2f} | {len(kdet[key])} / {len(torch[key])} |")
    if len(kdet_dev) != 1 or len(torch_dev) != 1:
        sys.exit(f"{folder}: runs on several devices ({kdet_dev}, {torch_dev}); one folder per device")
    (backend, device), (tdev, tname) = kdet_dev.pop(), torch_dev.pop()
    gpu = device != "cpu"
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    if gpu:
        kdet_what = f"`--features vulkan` build, `--device {device}`: burn's {backend} backend"
        torch_what = f"PyTorch {version} on `{tdev}`" + (f" ({tname})" if tname else "")
        where = (f"Machine: the one with the {tname or tdev}. Produced by "
                 "`bash scripts/gpu/device-bench.sh` there.")
    else:
        kdet_what = "release build, burn-flex CPU backend"
        torch_what = f"PyTorch {version}, {threads} threads, `OMP_WAIT_POLICY=PASSIVE`"
        where = (f"Machine: {cpu} cores, {platform.machine()}. Produced by "
                 "`bash scripts/bench-torch.sh`. GPU rows: see \"kdet against PyTorch on a GPU\".")
    section = [
        GPU_BEGIN if gpu else BEGIN,
        "",
        "The same work on the same machine: kdet (`kdet bench train`, `kdet bench infer`;",
        f"{kdet_what}) against the PyTorch reference `bench/reference/gfl_pair.py`",
        f"({torch_what}): the main pair's",
        "networks with equal parameter counts, the GFL loss with ATSS assignment, LD, AdamW, batch 8",
        "of 128×128 from the built-in training split. Rounds alternate kdet and PyTorch processes;",
        f"each number is the median over rounds of a process's median ({steps[0]} timed steps after",
        f"{steps[1]} warm-up). Ratio = kdet / PyTorch (above 1: kdet slower).",
        where,
        "",
        "| work | kdet | PyTorch | kdet / PyTorch | rounds |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]
    print(replace_section(md, section))


if __name__ == "__main__":
    main()
