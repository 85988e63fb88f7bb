"""A large COCO-style evaluation set for timing evaluators (scripts/bench-eval.sh).

Writes GT.json (polygon masks, COCO's ground-truth encoding, 80 categories with COCO's
non-contiguous ids) and DT.json (`--dets` detections per image with bbox, score and a
compressed-RLE segmentation: jittered copies of the ground truth plus false positives).
Seeded; the same arguments write the same files.

Usage: python bench_data.py OUT_DIR [--images N] [--dets D] [--seed S]
"""
import argparse
import json
import os

import numpy as np
from pycocotools import mask as mask_utils

# COCO's 80 category ids (1..90 with gaps).
CAT_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
H, W = 480, 640


def polygon(rng, x, y, w, h):
    """A jittered octagon inscribed in the box [x, y, w, h]."""
    t = np.linspace(0, 2 * np.pi, 8, endpoint=False) + rng.uniform(0, 0.5)
    r = rng.uniform(0.75, 1.0, size=8)
    px = np.clip(x + w / 2 + r * np.cos(t) * w / 2, 0, W - 1)
    py = np.clip(y + h / 2 + r * np.sin(t) * h / 2, 0, H - 1)
    return [float(v) for xy in zip(px, py) for v in xy]


def random_box(rng):
    # Log-uniform sizes: many small objects, some large ones, as in COCO.
    w = float(np.exp(rng.uniform(np.log(6), np.log(W * 0.8))))
    h = float(np.clip(w * np.exp(rng.normal(0, 0.4)), 4, H * 0.9))
    x = float(rng.uniform(0, W - w))
    y = float(rng.uniform(0, H - h))
    return [round(x, 2), round(y, 2), round(w, 2), round(h, 2)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)

    images, anns, dets = [], [], []
    for i in range(args.images):
        img_id = i + 1
        images.append({"id": img_id, "file_name": f"{img_id:012d}.jpg", "height": H, "width": W})
        gts = []
        for _ in range(int(rng.integers(1, 16))):
            box = random_box(rng)
            poly = polygon(rng, *box)
            rle = mask_utils.frPyObjects([poly], H, W)
            area = float(mask_utils.area(rle)[0])
            cat = int(rng.choice(CAT_IDS[:20] if rng.random() < 0.6 else CAT_IDS))
            crowd = int(rng.random() < 0.01)
            gts.append((box, cat))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": box,
                         "area": area, "segmentation": [poly], "iscrowd": crowd})
        for d in range(args.dets):
            if d < 3 * len(gts) and rng.random() < 0.8:
                (x, y, w, h), cat = gts[d % len(gts)]
                s = rng.normal(0, 0.08, size=4)
                box = [x + s[0] * w, y + s[1] * h, w * (1 + s[2]), h * (1 + s[3])]
                box = [round(float(v), 2) for v in np.clip(box, 1, None)]
                if rng.random() < 0.1:
                    cat = int(rng.choice(CAT_IDS))
                score = float(rng.uniform(0.3, 1.0))
            else:
                box, cat, score = random_box(rng), int(rng.choice(CAT_IDS)), float(rng.uniform(0.0, 0.6))
            rle = mask_utils.merge(mask_utils.frPyObjects([polygon(rng, *box)], H, W))
            dets.append({"image_id": img_id, "category_id": cat, "score": round(score, 5), "bbox": box,
                         "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}})

    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CAT_IDS]
    with open(os.path.join(args.out, "GT.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": categories}, f)
    with open(os.path.join(args.out, "DT.json"), "w") as f:
        json.dump(dets, f)
    print(f"{len(images)} images, {len(anns)} ground-truth objects, {len(dets)} detections in {args.out}")


if __name__ == "__main__":
    main()
