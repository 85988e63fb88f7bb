"""Measures, for each synthetic distillation recipe, the KD terms and the task losses on
the first training steps (student at initialisation, learning rate still warming up), and
prints the recipe weight that makes the weighted KD total equal the task-loss total there.

    python3 scripts/calibrate-kd.py [TEACHER_CKPT] [METHOD ...]

Runs `kdet distill --max-steps 5` with `train.log_every = 1` and the recipe weight forced
to 1 in a temporary experiment (under runs/calibrate/), on the training split only. This
is the rule the shipped `configs/distill/*_gfl_synth.toml` weights follow (see
configs/distill/README.md); standard library only.
"""
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["ld", "fgd", "pkd", "cwd", "fitnet", "logit_kd", "frs", "pgd"]


def main() -> None:
    args = sys.argv[1:]
    teacher = Path(args[0]) if args and args[0].endswith(".ckpt") else ROOT / "runs/bench/gfl_synth_teacher-seed0/last.ckpt"
    methods = [a for a in args if not a.endswith(".ckpt")] or METHODS
    kdet = ROOT / "target/release/kdet"
    out_dir = ROOT / "runs/calibrate"
    out_dir.mkdir(parents=True, exist_ok=True)
    print("| method | task loss | KD total at weight 1 | calibrated weight |")
    print("|---|---:|---:|---:|")
    for m in methods:
        src = ROOT / f"configs/distill/{m}_gfl_synth.toml"
        text = src.read_text()
        # Weight 1 for the measurement; log every step.
        text = re.sub(r"^weight = .*$", "", text, flags=re.M)
        # Full weight from the first step (no warm-up) for the measurement.
        text = re.sub(r"^schedule = .*$", "", text, flags=re.M)
        text = text.replace('extends = "baseline_gfl_synth.toml"', f'extends = "{ROOT / "configs/distill/baseline_gfl_synth.toml"}"')
        text += "\n[train]\nlog_every = 1\n"
        cfg = out_dir / f"{m}.toml"
        cfg.write_text(text)
        run = out_dir / m
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run([str(kdet), "distill", "--config", str(cfg), "--teacher", str(teacher),
                        "--out", str(run), "--max-steps", "5"], check=True, capture_output=True)
        task, kd = [], []
        for line in (run / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            losses = rec.get("losses")
            if not losses:
                continue
            task.append(sum(v for k, v in losses.items() if k.startswith("loss_")))
            kd.append(sum(v for k, v in losses.items() if k.startswith("kd.")))
        t, k = statistics.mean(task), statistics.mean(kd)
        print(f"| {m} | {t:.3f} | {k:.3f} | {t / k:.3g} |")


if __name__ == "__main__":
    main()
