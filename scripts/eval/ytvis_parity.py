"""Reference numbers for kdet's YouTube-VIS video AP, made with the youtubevos COCO API fork.

Input: a YouTube-VIS annotation file written by `kdet data synth --video` (synthetic videos
with object tracks). This script
1. adds what the generator does not make: one crowd track, one video with tracks larger than
   256x256 (the "large" area range) and one ground-truth track whose `areas` holds a 0;
2. makes perturbed predictions from the ground truth with a seeded numpy generator: masks
   shifted and eroded or dilated, frames dropped, masks in frames where the ground truth has
   none, wrong categories, duplicates, tied scores, an all-empty track, and false tracks;
3. evaluates them with the reference (`ytvis.py` / `ytviseval.py` as shipped in mmdet 3.3.0,
   copies of youtubevos/cocoapi's `ytvos.py` / `ytvoseval.py`) and writes the inputs and
   its numbers as the fixture.

Usage: python ytvis_parity.py REF_DIR GT_IN OUT_DIR
  REF_DIR holds ytvis.py and ytviseval.py; OUT_DIR receives ytvis_synth_gt.json,
  ytvis_synth_dt.json and ytvis_synth_reference.json.
"""
import copy
import json
import os
import sys
from importlib.metadata import version

import numpy as np

# The reference was written for numpy < 1.24, which still had `np.float`.
np.float = float  # noqa: E731

from pycocotools import mask as mask_utils  # noqa: E402

SEED = 20240611


def encode(m):
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode(seg, h, w):
    if seg is None:
        return None
    return mask_utils.decode(seg).astype(bool)


def shift(m, dx, dy):
    """`m` moved by (dx, dy) pixels, zero-filled."""
    out = np.zeros_like(m)
    h, w = m.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def erode(m, r):
    out = m.copy()
    for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        for k in range(1, r + 1):
            out &= shift(m, dx * k, dy * k)
    return out


def dilate(m, r):
    out = m.copy()
    for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        for k in range(1, r + 1):
            out |= shift(m, dx * k, dy * k)
    return out


def ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def add_ground_truth_extras(gt, rng):
    """A crowd track, a zero in an `areas` list, and a video with large tracks."""
    anns = gt["annotations"]
    anns[1]["iscrowd"] = 1
    # `areas` entries that are 0 (or null) are left out of the average.
    for a in anns:
        if a["iscrowd"] == 0 and all(s is not None for s in a["segmentations"]):
            a["areas"][0] = 0
            break
    vid = max(v["id"] for v in gt["videos"]) + 1
    h, w, frames = 320, 320, 3
    gt["videos"].append({
        "id": vid, "width": w, "height": h, "length": frames,
        "file_names": [f"big{vid:04d}/{t:05d}.png" for t in range(frames)],
    })
    next_id = max(a["id"] for a in anns) + 1
    cats = [c["id"] for c in gt["categories"]]
    tracks = [
        [ellipse(h, w, 160 + 4 * t, 160, 150, 145) for t in range(frames)],  # ~68000 px: large
        [ellipse(h, w, 150, 150 + 3 * t, 95, 90) if t != 1 else None for t in range(frames)],  # medium
        [np.pad(np.ones((40, 50), bool), ((20 + t, 260 - t), (10, 260))) for t in range(frames)],  # small
    ]
    for i, masks in enumerate(tracks):
        segs = [encode(m) if m is not None else None for m in masks]
        anns.append({
            "id": next_id + i, "video_id": vid, "category_id": cats[i % len(cats)],
            "segmentations": segs,
            "bboxes": [mask_utils.toBbox(s).tolist() if s else None for s in segs],
            "areas": [float(mask_utils.area(s)) if s else None for s in segs],
            "iscrowd": 0, "width": w, "height": h, "length": frames,
        })
    return gt


def perturbed_predictions(gt, rng):
    videos = {v["id"]: v for v in gt["videos"]}
    cats = [c["id"] for c in gt["categories"]]
    preds = []

    def score():
        # Two decimals: ties between tracks happen, and their file order must decide.
        return round(float(rng.uniform(0.05, 1.0)), 2)

    for a in gt["annotations"]:
        v = videos[a["video_id"]]
        h, w = v["height"], v["width"]
        masks = [decode(s, h, w) for s in a["segmentations"]]
        copies = 1 + int(rng.random() < 0.25)  # some duplicates
        for c in range(copies):
            if rng.random() < 0.12:
                continue  # missed track
            dx, dy = (int(x) for x in rng.integers(-4, 5, size=2))
            out = []
            last = None
            for m in masks:
                if m is None:
                    # Now and then a mask where the ground truth has none (the last one seen).
                    out.append(encode(shift(last, 5, 0)) if last is not None and rng.random() < 0.4 else None)
                    continue
                last = m
                if rng.random() < 0.15:
                    out.append(None)  # dropped frame
                    continue
                p = shift(m, dx + int(rng.integers(-1, 2)), dy + int(rng.integers(-1, 2)))
                op = rng.random()
                if op < 0.3:
                    p = erode(p, int(rng.integers(1, 4)))
                elif op < 0.6:
                    p = dilate(p, int(rng.integers(1, 4)))
                out.append(encode(p))
            cat = a["category_id"] if rng.random() > 0.1 else int(rng.choice(cats))
            preds.append({"video_id": a["video_id"], "category_id": cat, "score": score() * (0.6 if c else 1.0),
                          "segmentations": out})
    # False tracks: blobs in some frames, random categories.
    for v in gt["videos"]:
        h, w = v["height"], v["width"]
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            rx, ry = rng.uniform(4, w / 4), rng.uniform(4, h / 4)
            segs = [encode(ellipse(h, w, cx + 3 * t, cy, rx, ry)) if rng.random() < 0.7 else None
                    for t in range(v["length"])]
            preds.append({"video_id": v["id"], "category_id": int(rng.choice(cats)), "score": score(),
                          "segmentations": segs})
    # A track with no mask at all (area 0, IoU 0 with everything).
    v = gt["videos"][0]
    preds.append({"video_id": v["id"], "category_id": cats[0], "score": 0.5, "segmentations": [None] * v["length"]})
    # A prediction that exactly covers the crowd track (matched to it, so ignored).
    crowd = next(a for a in gt["annotations"] if a["iscrowd"])
    preds.append({"video_id": crowd["video_id"], "category_id": crowd["category_id"], "score": 0.97,
                  "segmentations": crowd["segmentations"]})
    order = rng.permutation(len(preds))
    return [preds[i] for i in order]


def main() -> None:
    ref_dir, gt_in, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, ref_dir)
    from ytvis import YTVIS  # noqa: E402
    from ytviseval import YTVISeval  # noqa: E402

    rng = np.random.default_rng(SEED)
    with open(gt_in) as f:
        gt = json.load(f)
    gt = add_ground_truth_extras(gt, rng)
    preds = perturbed_predictions(gt, rng)

    os.makedirs(out_dir, exist_ok=True)
    gt_path = os.path.join(out_dir, "ytvis_synth_gt.json")
    dt_path = os.path.join(out_dir, "ytvis_synth_dt.json")
    with open(gt_path, "w") as f:
        json.dump(gt, f, separators=(",", ":"))
    with open(dt_path, "w") as f:
        json.dump(preds, f, separators=(",", ":"))

    # The reference mutates what it is given (areas, ids): hand it copies.
    coco_gt = YTVIS(gt_path)
    coco_dt = coco_gt.loadRes(copy.deepcopy(preds))
    ev = YTVISeval(coco_gt, coco_dt, "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    p = ev.params
    doc = {
        "generator": (f"scripts/eval/ytvis_parity.py (seed {SEED}); reference: mmdet 3.3.0 "
                      f"ytvis.py/ytviseval.py on pycocotools {version('pycocotools')}, numpy {np.__version__}"),
        "stats": [float(s) for s in ev.stats],
        "category_ids": [int(c) for c in p.catIds],
        "shape": list(precision.shape),
        # recall [T, K, A, M] in full, and precision [T, R, K, A, M] averaged over R
        # (-1 where the cell has no ground truth), both flattened in C order.
        "recall": [float(x) for x in ev.eval["recall"].ravel()],
        "precision_mean_over_recall": [float(x) for x in precision.mean(axis=1).ravel()],
        "num_videos": len(p.vidIds),
        "num_predictions": len(preds),
    }
    with open(os.path.join(out_dir, "ytvis_synth_reference.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("stats:", " ".join(f"{s:.6f}" for s in ev.stats))


if __name__ == "__main__":
    main()
