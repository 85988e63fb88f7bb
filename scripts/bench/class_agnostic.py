"""Class-agnostic box and mask AP of a run's predictions: every ground-truth object and every
detection put in one category (each image's 100 best detections kept), then `kdet eval`.
What it separates: how well a model finds and outlines objects vs how well it names them.

Usage: python3 scripts/bench/class_agnostic.py GT.json RUN_DIR [RUN_DIR ...]
       (KDET=path/to/kdet, default target/release/kdet)
"""
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path


def agnostic_stats(gt_json: Path, run: Path, kdet: str) -> dict:
    """{"bbox": 12 stats, "segm": 12 stats} of `run`'s predictions.json against `gt_json`,
    both put in one category (each image's 100 best detections kept)."""
    gt = json.loads(Path(gt_json).read_text())
    one = gt["categories"][0]["id"]
    for a in gt["annotations"]:
        a["category_id"] = one
    gt["categories"] = [gt["categories"][0]]
    per_image = defaultdict(list)
    for d in json.loads((Path(run) / "predictions.json").read_text()):
        d["category_id"] = one
        per_image[d["image_id"]].append(d)
    kept = []
    for dets in per_image.values():
        dets.sort(key=lambda d: -d["score"])
        kept += dets[:100]
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dt_path = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_path.write_text(json.dumps(gt))
        dt_path.write_text(json.dumps(kept))
        for iou in ["bbox", "segm"]:
            out = subprocess.run(
                [kdet, "eval", "--gt", str(gt_path), "--dt", str(dt_path), "--iou-type", iou],
                check=True, capture_output=True, text=True).stdout
            result[iou] = [float(l.rsplit("= ", 1)[1]) for l in out.splitlines() if "maxDets=" in l]
    return result


def main():
    kdet = os.environ.get("KDET", "target/release/kdet")
    for run in sys.argv[2:]:
        stats = agnostic_stats(Path(sys.argv[1]), Path(run), kdet)
        row = [run] + [f"{iou} AP {100 * stats[iou][0]:.1f} AP50 {100 * stats[iou][1]:.1f}"
                       for iou in ["bbox", "segm"]]
        print(" | ".join(row))


if __name__ == "__main__":
    main()
