"""pycocotools' COCOeval end to end, as `kdet eval` runs it: load both files, evaluate,
accumulate, summarize. Prints the 12 stats with 6 decimals (one per line, `NAME VALUE`) so
the benchmark can check both tools agree.

Usage: python bench_pycocotools.py GT.json DT.json bbox|segm [mask|bbox]
  The last argument is the mask-area convention for segm: `mask` drops each result's bbox
  before loadRes (detectron2), `bbox` keeps it.
"""
import json
import sys

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def main() -> None:
    gt_path, dt_path, iou_type = sys.argv[1], sys.argv[2], sys.argv[3]
    segm_area = sys.argv[4] if len(sys.argv) > 4 else "mask"
    gt = COCO(gt_path)
    with open(dt_path) as f:
        dets = json.load(f)
    if iou_type == "segm" and segm_area == "mask":
        for d in dets:
            d.pop("bbox", None)
    dt = gt.loadRes(dets)
    ev = COCOeval(gt, dt, iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    for name, v in zip(NAMES, ev.stats):
        print(f"STAT {name} {v:.6f}")


if __name__ == "__main__":
    main()
