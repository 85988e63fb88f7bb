"""Class-agnostic box and mask AP of a run's predictions: every ground-truth object and every
detection put in one category (each image's 100 best detections kept), then `kdet eval`.
What it separates: how well a model finds and outlines objects vs how well it names them.
Beside it, the class accuracy of the found objects: for every ground-truth object, the
best-scoring detection of any class whose box overlaps it at IoU >= 0.7; the share of those
whose class is the object's (chance: 1 / the number of classes).

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


def box_iou(a, b) -> float:
    """IoU of two COCO `[x, y, w, h]` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def class_accuracy(gt_json: Path, run: Path, min_iou: float = 0.7):
    """(accuracy, found, objects, classes): over the ground-truth objects that some
    detection of `run` overlaps at box IoU >= min_iou, the share whose best-scoring such
    detection has the object's class."""
    gt = json.loads(Path(gt_json).read_text())
    per_image = defaultdict(list)
    for d in json.loads((Path(run) / "predictions.json").read_text()):
        per_image[d["image_id"]].append(d)
    found = right = 0
    for a in gt["annotations"]:
        near = [d for d in per_image[a["image_id"]] if box_iou(d["bbox"], a["bbox"]) >= min_iou]
        if not near:
            continue
        found += 1
        right += max(near, key=lambda d: d["score"])["category_id"] == a["category_id"]
    accuracy = right / found if found else float("nan")
    return accuracy, found, len(gt["annotations"]), len(gt["categories"])


def main():
    kdet = os.environ.get("KDET", "target/release/kdet")
    for run in sys.argv[2:]:
        stats = agnostic_stats(Path(sys.argv[1]), Path(run), kdet)
        row = [run] + [f"{iou} AP {100 * stats[iou][0]:.1f} AP50 {100 * stats[iou][1]:.1f}"
                       for iou in ["bbox", "segm"]]
        acc, found, objects, classes = class_accuracy(Path(sys.argv[1]), Path(run))
        row.append(f"class accuracy {100 * acc:.1f} % of {found}/{objects} found objects "
                   f"(chance {100 / classes:.1f} %)")
        print(" | ".join(row))


if __name__ == "__main__":
    main()
