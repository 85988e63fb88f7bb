"""Writes the "## Mask pair: distillation on the built-in data" section of
docs/benchmarks.md (standard library only).

Usage: python3 mask_distill_table.py RUNS_DIR TEACHER_RUN BENCHMARKS_MD METHOD [METHOD ...]
       (KDET=path/to/kdet for the class-agnostic column, default target/release/kdet)

RUNS_DIR/<method>-seed<S>/eval.json are the cells of scripts/bench-mask-distill.sh
(`baseline` among the methods), TEACHER_RUN the teacher's run directory. Mask AP (COCO segm,
a detection's area from its mask) and box AP over the 250 validation images; mean and
sample standard deviation over the seeds present; gain = mean mask AP of the method minus
the baseline's over the seeds both have; pooled std = sqrt((s_m^2 + s_b^2) / 2) (shown from
2 seeds on). s/step = median seconds per step from the 25-step logging intervals.
Class-agnostic mask AP (scripts/bench/class_agnostic.py: every object and detection in one
category) separates finding and outlining objects from naming them; class accuracy (same
script) is the share of found objects whose best-scoring detection names their class.
"""
import json
import os
import math
import statistics
import sys
from pathlib import Path

from class_agnostic import agnostic_stats, class_accuracy
from distill_table import mean_std, run_timings
from mdsection import machine_label, replace_section

BEGIN = "## Mask pair: distillation on the built-in data"


def load(run: Path, gt: Path):
    if not (run / "eval.json").exists():
        return None
    e = json.loads((run / "eval.json").read_text())
    agnostic = agnostic_stats(gt, run, os.environ.get("KDET", "target/release/kdet"))
    return {
        "segm": e["segm"]["report"]["stats"],
        "box": e["report"]["stats"],
        "agnostic": agnostic["segm"][0],
        "class_acc": class_accuracy(gt, run)[0],
        **run_timings(run),
    }


def fmt(values):
    m, s = mean_std(values)
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def main():
    runs, teacher_run, md = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    methods = sys.argv[4:]
    cells = {m: {} for m in methods}
    # The validation split every run of the pair shares (the teacher's stored data folder).
    stored = json.loads((teacher_run / "experiment.json").read_text())
    gt = Path(stored["data"]["synth"]["root"]) / "val" / "annotations.json"
    for m in methods:
        for run in sorted(runs.glob(f"{m}-seed*")):
            c = load(run, gt)
            if c is not None:
                cells[m][int(run.name.rsplit("seed", 1)[1])] = c
    lines = [
        BEGIN,
        "",
        "The Mask2Former-lite pair (`configs/m2f_synth_teacher.toml`, `configs/m2f_synth_student.toml`)",
        "on the built-in data with objects 2.5× larger (`object_scale = 2.5`), 8 epochs; the",
        "teacher's backbone starts from the shipped GFL teacher's, the student from random",
        "weights (the `teacher (from scratch)` row is the same teacher from random weights,",
        "`configs/m2f_synth_teacher_scratch.toml`). Every",
        "student cell is `kdet distill --config configs/distill/<method>_m2f_synth.toml --seed S`",
        "with the seed-0 teacher, written by `bash scripts/bench-mask-distill.sh` (resumable) and",
        f"this table by `python3 scripts/bench/mask_distill_table.py`. Trained on{machine_label() or ' the reference Intel Xeon'}",
        "(training is exact per processor). Mask AP: COCO segm, area from the mask; gain and",
        "pooled σ over the seeds the method and the baseline share; class-agnostic mask AP puts",
        "every object and detection in one category (`scripts/bench/class_agnostic.py`); class",
        "accuracy: of the objects some detection overlaps at box IoU ≥ 0.7, the share whose",
        "best-scoring such detection has the object's class (same script; chance 12.5 %). s/step",
        "as logged, on 2 cores shared by two runs (the teachers' by up to three other jobs). The weights of the KD recipes have not been",
        "through the tuning budget yet.",
        "",
        "| model | seeds | mask AP | mask AP50 | box AP | class-agnostic mask AP | class accuracy % | mask AP gain | gain / pooled σ | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    scratch = teacher_run.with_name(teacher_run.name.replace("teacher", "teacher_scratch"))
    for label, run in [("teacher", teacher_run), ("teacher (from scratch)", scratch)]:
        t = load(run, gt) if run.is_dir() else None
        if t is not None:
            lines.append(
                f"| {label} | 0 | {100 * t['segm'][0]:.1f} | {100 * t['segm'][1]:.1f} | "
                f"{100 * t['box'][0]:.1f} | {100 * t['agnostic']:.1f} | {100 * t['class_acc']:.1f} | | | "
                f"{t['step_s'] or float('nan'):.2f} |"
            )
    base = cells.get("baseline", {})
    for m in methods:
        c = cells[m]
        if not c:
            lines.append(f"| {m} | none yet | | | | | | | | |")
            continue
        seeds = sorted(c)
        segm = [c[s]["segm"][0] for s in seeds]
        gain, ratio = "", ""
        shared = [s for s in seeds if s in base]
        if m != "baseline" and shared:
            a = [c[s]["segm"][0] for s in shared]
            b = [base[s]["segm"][0] for s in shared]
            g = statistics.mean(a) - statistics.mean(b)
            gain = f"{100 * g:+.1f} ({len(shared)} seed{'s' if len(shared) > 1 else ''})"
            if len(shared) > 1:
                pooled = math.sqrt((statistics.stdev(a) ** 2 + statistics.stdev(b) ** 2) / 2)
                ratio = f"{g / pooled:+.1f}" if pooled > 0 else ""
        steps = [c[s]["step_s"] for s in seeds if c[s]["step_s"] is not None]
        lines.append(
            f"| {m} | {', '.join(map(str, seeds))} | {fmt(segm)} | "
            f"{fmt([c[s]['segm'][1] for s in seeds])} | {fmt([c[s]['box'][0] for s in seeds])} | "
            f"{fmt([c[s]['agnostic'] for s in seeds])} | {fmt([c[s]['class_acc'] for s in seeds])} | {gain} | {ratio} | {statistics.median(steps) if steps else float('nan'):.2f} |"
        )
    print("\n".join(replace_section(md, lines).splitlines()))


if __name__ == "__main__":
    main()
