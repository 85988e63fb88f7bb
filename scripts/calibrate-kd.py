"""Measures, for each synthetic distillation recipe, the KD terms and the task losses on
the first training steps (student at initialisation, learning rate still warming up), and
prints the recipe weight that makes the weighted KD total equal the task-loss total there.

    python3 scripts/calibrate-kd.py [TEACHER_CKPT] [METHOD ...]

Runs `kdet distill --max-steps 5` on the shipped recipe with, on the command line,
`--set train.log_every=1` and every entry's weight set to 1 and its schedule to the
default (full weight from the first step), on the training split only (runs under
runs/calibrate/). This is the rule the shipped `configs/distill/*_gfl_synth.toml` weights
follow (see configs/distill/README.md); standard library only. The methods default to
every method the binary knows (`kdet config methods`) that has a synthetic recipe.
"""
import json
import shutil
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Logged KD terms the recipe weight does not scale (kdet_distill::KdTerm::unweighted): LGD's
# dynamic teacher trains on its own detection losses, ICD's encoder and decoder on their
# auxiliary task: neither is a distillation term.
UNWEIGHTED = {"kd.lgd.teacher", "kd.icd.identification", "kd.icd.localization"}


def kdet_out(kdet, *args):
    return subprocess.run([str(kdet), *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    args = sys.argv[1:]
    teacher = Path(args[0]) if args and args[0].endswith(".ckpt") else ROOT / "runs/bench/gfl_synth_teacher-seed0/last.ckpt"
    kdet = ROOT / "target/release/kdet"
    known = kdet_out(kdet, "config", "methods").split()
    methods = [a for a in args if not a.endswith(".ckpt")]
    for m in methods:
        if m not in known:
            raise SystemExit(f"calibrate-kd.py: unknown method {m} (kdet config methods: {' '.join(known)})")
    methods = methods or [m for m in known if (ROOT / f"configs/distill/{m}_gfl_synth.toml").is_file()]
    out_dir = ROOT / "runs/calibrate"
    out_dir.mkdir(parents=True, exist_ok=True)
    print("| method | task loss | KD total at weight 1 | calibrated weight |")
    print("|---|---:|---:|---:|")
    for m in methods:
        cfg = ROOT / f"configs/distill/{m}_gfl_synth.toml"
        resolved = tomllib.loads(kdet_out(kdet, "config", "print", "--config", str(cfg)))
        entries = resolved["distill"]["losses"]
        # A teacher-free recipe (LGD) runs without one.
        with_teacher = ["--teacher", str(teacher)] if "teacher" in resolved else []
        # Weight 1 and full weight from the first step (no warm-up) for the measurement;
        # a training line every step.
        sets = ["--set=train.log_every=1"]
        for i in range(len(entries)):
            sets += [f"--set=distill.losses.{i}.weight=1", f"--set=distill.losses.{i}.schedule={{}}"]
        run = out_dir / m
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run([str(kdet), "distill", "--config", str(cfg), *sets, *with_teacher,
                        "--out", str(run), "--max-steps", "5"], check=True, capture_output=True)
        task, kd = [], []
        for line in (run / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            losses = rec.get("losses")
            if not losses:
                continue
            task.append(sum(v for k, v in losses.items() if k.startswith("loss_")))
            kd.append(sum(v for k, v in losses.items() if k.startswith("kd.") and k not in UNWEIGHTED))
        t, k = statistics.mean(task), statistics.mean(kd)
        print(f"| {m} | {t:.3f} | {k:.3f} | {t / k:.3g} |")


if __name__ == "__main__":
    main()
