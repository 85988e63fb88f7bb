#!/usr/bin/env python3
"""PyTorch reference of kdet's shipped GFL teacher/student pair (issue #7, part 2).

Re-implements, from kdet's Rust source, the work of one training step of the synthetic
pair so that a benchmark can divide kdet's time by PyTorch's for the same work on the
same machine:

- the networks of ``configs/gfl_synth_student.toml`` and ``configs/gfl_synth_teacher.toml``
  (SmallResNet = torchvision-style BasicBlock ResNet, ``crates/kdet-models/src/backbone``;
  mmdet FPN, ``neck/fpn.rs``; GFL head with GN towers, per-level ``Scale`` and
  ``reg_max + 1`` edge bins, ``heads/gfl/head.rs``), read from the TOML files;
- GFL's training loss as ``heads/gfl/loss.rs`` computes it: ATSS assignment
  (``assigners/atss.rs``: top-k nearest centres per level, ``mean + std`` IoU threshold,
  centre-inside test, highest IoU wins), QFL (beta 2), DFL and GIoU, weighted and reduced
  as kdet does (``avg_factor = max(sum(w), 1)``);
- LD as the KD loss (``crates/kdet-distill/src/losses/ld.rs``: main-region LD, VLR LD and
  main-region class KD, with ``LdConfig``'s defaults and the recipe weight of
  ``configs/distill/ld_gfl_synth.toml``), the teacher in eval mode under ``torch.no_grad()``;
- data: the built-in synthetic split (``data/synth/train``: COCO json + 128x128 PNGs),
  normalised with kdet's ``Normalize::default()`` (ImageNet mean/std on the 0..255 scale),
  no flip; the first ``warmup + iters`` batches are loaded before anything is timed.

Timings (median / min / max over ``--iters`` after ``--warmup``; ``time.perf_counter``):
``student_step_ms``, ``teacher_forward_ms`` and ``distill_step_ms`` (interleaved, rotating
order, within each iteration), then ``infer_forward_ms_per_image`` of both networks at
batch 1 and batch 8 (eval, no_grad, teacher and student interleaved).

    .venv-torch/bin/python bench/reference/gfl_pair.py --out runs/bench/torch/gfl_pair.json
    .venv-torch/bin/python bench/reference/gfl_pair.py --sanity-steps 30   # loss check only
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

# What `kdet bench infer --config <file> --iters 1 --warmup 0` prints as "parameters" for
# the shipped configs (burn's `Module::num_params`, which also counts every BatchNorm's
# running mean and variance; kdet's own `num_parameters` helper leaves those out).
KDET_PARAMETERS = {
    "configs/gfl_synth_student.toml": 630_839,
    "configs/gfl_synth_teacher.toml": 6_643_359,
}

# kdet-data `Normalize::default()`: ImageNet statistics on the 0..255 scale.
NORM_MEAN = (123.675, 116.28, 103.53)
NORM_STD = (58.395, 57.12, 57.375)

# kdet-structures `iou::EPS` (tensor IoU / GIoU denominators).
IOU_EPS = 1e-7

# kdet-distill `LdConfig` defaults (official LD R50 config).
LD_DEFAULTS = {
    "ld_temperature": 10.0,
    "ld_weight": 0.25,
    "vlr_temperature": 10.0,
    "vlr_weight": 0.25,
    "kd_temperature": 2.0,
    "kd_weight": 10.0,
    "vlr_alpha": 0.25,
    "vlr_topk": 9,
    "vlr_diou": "anchor_iof",
}


# --------------------------------------------------------------------------- configs


def _merge(base: dict, over: dict) -> None:
    """kdet's `merge_tables`: tables merge key by key, anything else replaces."""
    for k, v in over.items():
        if isinstance(base.get(k), dict) and isinstance(v, dict):
            _merge(base[k], v)
        else:
            base[k] = v


def load_experiment(path: Path, depth: int = 0) -> dict:
    """An experiment file with its `extends` chain merged in (kdet-cli `experiment.rs`)."""
    if depth > 8:
        raise ValueError(f"{path}: `extends` chain deeper than 8 files")
    with open(path, "rb") as f:
        table = tomllib.load(f)
    base_name = table.pop("extends", None)
    if base_name is None:
        return table
    base = load_experiment((path.parent / base_name).resolve(), depth + 1)
    _merge(base, table)
    return base


@dataclass
class ModelSpec:
    stem: int
    widths: tuple
    depths: tuple
    out_indices: tuple
    neck_channels: int
    num_outs: int
    extra_from: str
    relu_before_extra: bool
    num_classes: int
    feat_channels: int
    stacked_convs: int
    reg_max: int
    gn_groups: int
    prior_prob: float
    init_std: float
    strides: tuple
    octave_base_scale: float
    center_offset: float
    topk: int
    qfl_beta: float
    w_cls: float
    w_dfl: float
    w_bbox: float

    @staticmethod
    def from_experiment(exp: dict, name: str) -> "ModelSpec":
        m = exp["model"]
        bb, neck, head = m["backbone"], m["neck"], m["head"]
        if bb.get("type") != "small_resnet":
            raise ValueError(f"{name}: only backbone type small_resnet is implemented")
        if bb.get("norm", "batch") != "batch":
            raise ValueError(f"{name}: only backbone norm `batch` is implemented")
        if head.get("type") != "gfl":
            raise ValueError(f"{name}: only head type gfl is implemented")
        norm = head.get("norm", {"Group": 32})
        if not (isinstance(norm, dict) and "Group" in norm):
            raise ValueError(f"{name}: only GroupNorm head towers are implemented")
        anchor = head.get("anchor", {})
        if anchor.get("ratios", [1.0]) != [1.0] or anchor.get("scales_per_octave", 1) != 1:
            raise ValueError(f"{name}: only one square anchor per location is implemented")
        return ModelSpec(
            stem=bb["stem_channels"],
            widths=tuple(bb["widths"]),
            depths=tuple(bb["depths"]),
            out_indices=tuple(bb.get("out_indices", [1, 2, 3])),
            neck_channels=neck.get("out_channels", 256),
            num_outs=neck.get("num_outs", 5),
            extra_from=neck.get("extra_from", "output"),
            relu_before_extra=neck.get("relu_before_extra_convs", False),
            num_classes=head["num_classes"],
            feat_channels=head.get("feat_channels", 256),
            stacked_convs=head.get("stacked_convs", 4),
            reg_max=head.get("reg_max", 16),
            gn_groups=norm["Group"],
            prior_prob=head.get("prior_prob", 0.01),
            init_std=head.get("init_std", 0.01),
            strides=tuple(anchor.get("strides", [8, 16, 32, 64, 128])),
            octave_base_scale=anchor.get("octave_base_scale", 8.0),
            center_offset=anchor.get("center_offset", 0.0),
            topk=head.get("assigner", {}).get("topk", 9),
            qfl_beta=head.get("loss_cls", {}).get("beta", 2.0),
            w_cls=head.get("loss_cls", {}).get("loss_weight", 1.0),
            w_dfl=head.get("loss_dfl", {}).get("loss_weight", 0.25),
            w_bbox=head.get("loss_bbox", {}).get("loss_weight", 2.0),
        )


def ld_settings(exp: dict) -> tuple[dict, float]:
    """The LD entry of a distillation recipe: LdConfig defaults + overrides, and its weight."""
    entries = [e for e in exp.get("distill", {}).get("losses", []) if e["loss"]["type"] == "ld"]
    if len(entries) != 1:
        raise ValueError("the distillation config must hold exactly one `ld` loss")
    entry = entries[0]
    cfg = dict(LD_DEFAULTS)
    for k, v in entry["loss"].items():
        if k == "type":
            continue
        if k not in cfg:
            raise ValueError(f"`{k}` is not a setting of the ld loss")
        cfg[k] = v
    sched = entry.get("schedule", {})
    if sched.get("warmup_iterations", 0) or sched.get("start_at", 0):
        raise ValueError("an LD schedule with warm-up / start_at is not implemented")
    return cfg, float(entry.get("weight", 1.0))


# --------------------------------------------------------------------------- networks


class BasicBlock(nn.Module):
    """torchvision `BasicBlock` (kdet `resnet_block.rs`)."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = None
        if stride != 1 or cin != width:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, width, 1, stride, 0, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class SmallResNet(nn.Module):
    """kdet `SmallResNetConfig` -> `ResNetArch` with BasicBlocks: 7x7/2 stem + BN + ReLU +
    3x3/2 max-pool, four stages (strides 1, 2, 2, 2), returns `out_indices`."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.conv1 = nn.Conv2d(3, spec.stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(spec.stem)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = spec.stem
        layers = []
        for stage in range(4):
            blocks = []
            for b in range(spec.depths[stage]):
                stride = (1 if stage == 0 else 2) if b == 0 else 1
                blocks.append(BasicBlock(cin, spec.widths[stage], stride))
                cin = spec.widths[stage]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_indices = spec.out_indices
        self.out_channels = [spec.widths[i] for i in spec.out_indices]
        for m in self.modules():  # torchvision / kdet init: kaiming_normal fan_out
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        deepest = max(self.out_indices)
        stages = []
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            if i > deepest:
                break
            x = layer(x)
            stages.append(x)
        return [stages[i] for i in self.out_indices]


class FPN(nn.Module):
    """mmdet `FPN` as kdet `neck/fpn.rs`: 1x1 laterals, nearest top-down merge, 3x3
    outputs, stride-2 extra convs; no norm, no activation; Xavier-uniform, zero bias."""

    def __init__(self, in_channels: list, spec: ModelSpec):
        super().__init__()
        c = spec.neck_channels
        n = len(in_channels)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(ci, c, 1) for ci in in_channels)
        convs = [nn.Conv2d(c, c, 3, 1, 1) for _ in in_channels]
        for i in range(n, spec.num_outs):
            cin = in_channels[-1] if (i == n and spec.extra_from == "input") else c
            convs.append(nn.Conv2d(cin, c, 3, 2, 1))
        self.fpn_convs = nn.ModuleList(convs)
        self.extra_from = spec.extra_from
        self.relu_before_extra = spec.relu_before_extra
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs):
        n = len(inputs)
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n)]
        for i in range(n, len(self.fpn_convs)):
            if i == n:
                src = inputs[-1] if self.extra_from == "input" else outs[-1]
            elif self.relu_before_extra:
                src = F.relu(outs[-1])
            else:
                src = outs[-1]
            outs.append(self.fpn_convs[i](src))
        return outs


class Scale(nn.Module):
    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([value], dtype=torch.float32))

    def forward(self, x):
        return x * self.scale


class GFLHead(nn.Module):
    """kdet `GflHead` (mmdet `GFLHead`): cls / reg towers of conv3x3 (no bias) + GN + ReLU
    shared over levels, `gfl_cls` (K sigmoid logits, bias -ln(99)), `gfl_reg`
    (4 (reg_max + 1) edge logits) times a per-level Scale."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        c_in, c = spec.neck_channels, spec.feat_channels

        def tower():
            return nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(c_in if i == 0 else c, c, 3, 1, 1, bias=False),
                    nn.GroupNorm(spec.gn_groups, c),
                    nn.ReLU(inplace=True),
                )
                for i in range(spec.stacked_convs)
            )

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.gfl_cls = nn.Conv2d(c, spec.num_classes, 3, 1, 1)
        self.gfl_reg = nn.Conv2d(c, 4 * (spec.reg_max + 1), 3, 1, 1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in spec.strides)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, spec.init_std)
        nn.init.constant_(self.gfl_cls.bias, -math.log((1 - spec.prior_prob) / spec.prior_prob))
        nn.init.zeros_(self.gfl_reg.bias)

    def forward(self, feats):
        out = []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = x, x
            for m in self.cls_convs:
                cls_feat = m(cls_feat)
            for m in self.reg_convs:
                reg_feat = m(reg_feat)
            out.append((self.gfl_cls(cls_feat), scale(self.gfl_reg(reg_feat))))
        return out


class GFLDetector(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = SmallResNet(spec)
        self.neck = FPN(self.backbone.out_channels, spec)
        self.head = GFLHead(spec)

    def forward(self, images):
        """Per level `(cls_logits [B, K, H, W], box_regression [B, 4(n+1), H, W])`."""
        return self.head(self.neck(self.backbone(images)))


def parameter_counts(model: nn.Module) -> dict:
    trainable = sum(p.numel() for p in model.parameters())
    bn_stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
    )
    return {"trainable": trainable, "bn_running_stats": bn_stats, "kdet_count": trainable + bn_stats}


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: list) -> None:
    """Running BN statistics from a few batches (cumulative average), so that an untrained
    network in eval mode sees activations of a sane scale."""
    momenta = {}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            momenta[m] = m.momentum
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for b in batches:
        model(b.images)
    for m, mom in momenta.items():
        m.momentum = mom
    model.eval()


# --------------------------------------------------------------------------- data


@dataclass
class Batch:
    images: torch.Tensor  # [B, 3, H, W] normalised
    gt_boxes: torch.Tensor  # [B, G, 4] xyxy, input pixels, zero padded
    gt_labels: torch.Tensor  # [B, G] int64
    gt_valid: torch.Tensor  # [B, G] bool
    image_hw: list  # per image (h, w) inside the padded batch


def load_coco_split(root: Path) -> tuple[list, int]:
    """Per image (file path, boxes xyxy, labels), in image-id order, as kdet-data `coco.rs`
    reads them (categories sorted by id -> labels 0..K-1; zero-size and outside boxes
    skipped, boxes clipped to the image; crowd boxes dropped: no GFL/LD term uses them
    with `ignore_iof_thr` off)."""
    with open(root / "annotations.json") as f:
        coco = json.load(f)
    cat_ids = sorted(c["id"] for c in coco["categories"])
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    images = sorted(coco["images"], key=lambda im: im["id"])
    anns: dict[int, list] = {im["id"]: [] for im in images}
    for a in coco["annotations"]:
        anns[a["image_id"]].append(a)
    records = []
    for im in images:
        w, h = im["width"], im["height"]
        boxes, labels = [], []
        for a in sorted(anns[im["id"]], key=lambda a: a["id"]):
            if a.get("iscrowd"):
                continue
            x, y, bw, bh = a["bbox"]
            if bw <= 0 or bh <= 0:
                continue
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(label_of[a["category_id"]])
        records.append((root / "images" / im["file_name"], boxes, labels))
    return records, len(cat_ids)


def make_batches(records: list, batch_size: int, count: int, size_divisor: int = 32) -> list:
    mean = np.array(NORM_MEAN, dtype=np.float32)
    std = np.array(NORM_STD, dtype=np.float32)
    need = batch_size * count
    if need > len(records):
        raise SystemExit(f"{count} batches of {batch_size} need {need} images, the split has {len(records)}")
    out = []
    for b in range(count):
        recs = records[b * batch_size : (b + 1) * batch_size]
        arrays = []
        for path, _, _ in recs:
            with Image.open(path) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.float32)
            arrays.append(((a - mean) / std).transpose(2, 0, 1))
        hmax = max(a.shape[1] for a in arrays)
        wmax = max(a.shape[2] for a in arrays)
        ph = -(-hmax // size_divisor) * size_divisor
        pw = -(-wmax // size_divisor) * size_divisor
        images = torch.zeros(len(recs), 3, ph, pw)
        for i, a in enumerate(arrays):
            images[i, :, : a.shape[1], : a.shape[2]] = torch.from_numpy(np.ascontiguousarray(a))
        g = max(1, max(len(r[1]) for r in recs))
        gt_boxes = torch.zeros(len(recs), g, 4)
        gt_labels = torch.zeros(len(recs), g, dtype=torch.long)
        gt_valid = torch.zeros(len(recs), g, dtype=torch.bool)
        for i, (_, boxes, labels) in enumerate(recs):
            if boxes:
                gt_boxes[i, : len(boxes)] = torch.tensor(boxes)
                gt_labels[i, : len(labels)] = torch.tensor(labels)
                gt_valid[i, : len(boxes)] = True
        out.append(
            Batch(images, gt_boxes, gt_labels, gt_valid, [(a.shape[1], a.shape[2]) for a in arrays])
        )
    return out


# --------------------------------------------------------------------------- priors, boxes


@dataclass
class Priors:
    boxes: torch.Tensor  # [N, 4]
    centers: torch.Tensor  # [N, 2]
    strides: torch.Tensor  # [N] stride of each prior's level
    bounds: list  # per level (start, end)
    valid: torch.Tensor  # [B, N] prior on the image (not on the batch padding)


def grid_priors(spec: ModelSpec, level_sizes: list, image_hw: list) -> Priors:
    """kdet `AnchorGeneratorConfig::grid_priors`: one square anchor of side
    `octave_base_scale * stride` per cell, centred at `(x + center_offset) * stride`;
    order level, row, column. `valid_flags` for each image."""
    boxes, strides, bounds, valid = [], [], [], []
    start = 0
    for s, (h, w) in zip(spec.strides, level_sizes):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx = (xs.reshape(-1).float() + spec.center_offset) * s
        cy = (ys.reshape(-1).float() + spec.center_offset) * s
        half = 0.5 * s * spec.octave_base_scale
        boxes.append(torch.stack([cx - half, cy - half, cx + half, cy + half], 1))
        strides.append(torch.full((h * w,), float(s)))
        bounds.append((start, start + h * w))
        start += h * w
        per_image = []
        for ih, iw in image_hw:
            vh, vw = min(-(-ih // s), h), min(-(-iw // s), w)
            per_image.append(((ys < vh) & (xs < vw)).reshape(-1))
        valid.append(torch.stack(per_image))
    boxes = torch.cat(boxes)
    centers = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    return Priors(boxes, centers, torch.cat(strides), bounds, torch.cat(valid, 1))


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`a [..., G, 4]` vs `b [N, 4]` -> `[..., G, N]` (kdet `iou_xyxy`, 0 for an empty union)."""
    a = a.unsqueeze(-2)
    iw = (torch.minimum(a[..., 2], b[:, 2]) - torch.maximum(a[..., 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[..., 3], b[:, 3]) - torch.maximum(a[..., 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-30), torch.zeros_like(inter))


def aligned_iou_giou(a: torch.Tensor, b: torch.Tensor, giou: bool):
    """kdet `aligned_iou_tensor` / `aligned_giou_tensor` on `[P, 4]` xyxy boxes."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]).clamp_min(0) * (a[:, 3] - a[:, 1]).clamp_min(0)
    area_b = (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)
    union = area_a + area_b - inter
    iou = inter / union.clamp_min(IOU_EPS)
    if not giou:
        return iou
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    enclose = cw.clamp_min(0) * ch.clamp_min(0)
    return iou - (enclose - union) / enclose.clamp_min(IOU_EPS)


# --------------------------------------------------------------------------- ATSS


def atss_statistics(priors: Priors, gt_boxes: torch.Tensor, topk: int):
    """kdet `atss_statistics`, batched: per ground truth the `topk` valid priors per level
    nearest its centre (ties by prior index: a stable sort), their IoUs and the threshold
    `mean + std` (unbiased std, in float64 as kdet; 0 for a single candidate). Returns
    `(candidates [B, G, C], candidate IoUs [B, G, C], threshold [B, G], IoU with every
    prior [B, G, N], candidate is a valid prior [B, G, C])`."""
    gc = 0.5 * (gt_boxes[..., :2] + gt_boxes[..., 2:])  # [B, G, 2]
    d = priors.centers - gc.unsqueeze(-2)  # [B, G, N, 2]
    dist2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]  # [B, G, N]
    dist2 = dist2.masked_fill(~priors.valid.unsqueeze(1), float("inf"))
    cands = []
    for start, end in priors.bounds:
        k = min(topk, end - start)
        order = torch.sort(dist2[..., start:end], dim=-1, stable=True).indices[..., :k]
        cands.append(order + start)
    cand = torch.cat(cands, -1)  # [B, G, C]
    ious = pairwise_iou(gt_boxes, priors.boxes)  # [B, G, N]
    cand_iou = ious.gather(-1, cand)
    # Priors on the batch padding are no candidates (a level with fewer valid priors
    # than topk gives fewer); none are on the built-in data (128 is a multiple of 32).
    real = priors.valid.unsqueeze(1).expand_as(ious).gather(-1, cand)
    c64 = cand_iou.double() * real
    count = real.sum(-1).double()
    mean = c64.sum(-1) / count.clamp_min(1)
    var = (((c64 - mean.unsqueeze(-1)) * real) ** 2).sum(-1) / (count - 1).clamp_min(1)
    std = torch.where(count > 1, var.sqrt(), torch.zeros_like(var))
    return cand, cand_iou, (mean + std).float(), ious, real


@dataclass
class Assignment:
    pos: torch.Tensor  # [B, N] bool
    gt_index: torch.Tensor  # [B, N] matched ground truth (valid where pos)
    ignore: torch.Tensor  # [B, N] bool
    max_iou: torch.Tensor  # [B, N]


def atss_assign(priors: Priors, batch: Batch, topk: int) -> Assignment:
    """kdet `AtssAssigner::assign`: candidates with IoU >= t_g whose centre lies inside the
    ground truth by more than 0.01 px are positives; a prior claimed by several ground
    truths takes the one of highest IoU."""
    gt, valid_gt = batch.gt_boxes, batch.gt_valid
    b, g = valid_gt.shape
    n = priors.boxes.shape[0]
    cand, cand_iou, thr, ious, real = atss_statistics(priors, gt, topk)
    cc = priors.centers[cand]  # [B, G, C, 2]
    g4 = gt.unsqueeze(-2)
    inside = (
        torch.stack(
            [cc[..., 0] - g4[..., 0], cc[..., 1] - g4[..., 1], g4[..., 2] - cc[..., 0], g4[..., 3] - cc[..., 1]],
            -1,
        ).amin(-1)
        > 0.01
    )
    ok = (cand_iou >= thr.unsqueeze(-1)) & inside & valid_gt.unsqueeze(-1) & real
    claim = torch.full((b, g, n), -1.0)
    claim.scatter_(-1, cand, torch.where(ok, cand_iou, torch.full_like(cand_iou, -1.0)))
    best_iou, best_g = claim.max(dim=1)  # [B, N]
    pos = best_iou > -0.5
    all_max = ious.masked_fill(~valid_gt.unsqueeze(-1), 0.0).amax(dim=1).clamp_min(0)
    return Assignment(pos, best_g, ~priors.valid, torch.where(pos, best_iou, all_max))


# --------------------------------------------------------------------------- losses


def flatten_levels(maps: list, per_prior: int) -> torch.Tensor:
    """`[B, C, H, W]` per level -> `[B, N, per_prior]` (kdet `flatten_levels`)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, per_prior) for m in maps], 1)


def integral(logits: torch.Tensor) -> torch.Tensor:
    """`[M, n + 1]` -> `[M]`: sum_i i softmax(z)_i."""
    project = torch.arange(logits.shape[1], dtype=logits.dtype)
    return (F.softmax(logits, 1) * project).sum(1)


def distribution_focal_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    bins = logits.shape[1]
    log_p = F.log_softmax(logits, 1)
    left_f = targets.floor()
    left = left_f.long().clamp(0, bins - 2)
    right = left + 1
    w_left = left_f + 1 - targets
    w_right = targets - left_f
    lp_l = log_p.gather(1, left[:, None]).squeeze(1)
    lp_r = log_p.gather(1, right[:, None]).squeeze(1)
    return -(lp_l * w_left + lp_r * w_right)


def gfl_loss(spec: ModelSpec, levels: list, priors: Priors, assign: Assignment, batch: Batch) -> dict:
    """kdet `gfl_loss` (mmdet `GFLHead.loss`), all levels at once."""
    k, bins = spec.num_classes, spec.reg_max + 1
    cls = flatten_levels([c for c, _ in levels], k)
    b, n, _ = cls.shape
    cls = cls.reshape(b * n, k)
    reg = flatten_levels([r for _, r in levels], 4 * bins).reshape(b * n, 4 * bins)

    pos = assign.pos.reshape(-1)
    pos_idx = pos.nonzero().squeeze(1)
    num_pos = pos_idx.numel()
    num_total = max(float(num_pos), 1.0)
    labels = torch.where(assign.pos, batch.gt_labels.gather(1, assign.gt_index), k).reshape(-1)
    label_weights = (~assign.ignore).reshape(-1).float()
    one_hot = F.one_hot(labels, k + 1)[:, :k].float()

    def qfl(soft):
        # Sigmoid BCE scaled by |y - sigmoid(z)|^beta, summed over classes, label-weighted.
        scale = (soft - cls.sigmoid()).abs().pow(spec.qfl_beta)
        per_row = (F.binary_cross_entropy_with_logits(cls, soft, reduction="none") * scale).sum(1)
        return (per_row * label_weights).sum() / num_total * spec.w_cls

    if num_pos == 0:
        zero = reg.sum() * 0.0
        return {"loss_cls": qfl(one_hot * 0.0), "loss_bbox": zero, "loss_dfl": zero}

    prior_of = pos_idx % n
    s = priors.strides[prior_of].unsqueeze(1)  # [P, 1]
    centers = priors.centers[prior_of] / s
    gt_idx = assign.gt_index.reshape(-1)[pos_idx]
    img_of = pos_idx // n
    gt = batch.gt_boxes[img_of, gt_idx] / s  # [P, 4] in strides
    pos_reg = reg[pos_idx]  # [P, 4 bins]
    weight = cls.detach()[pos_idx].sigmoid().max(1).values  # [P]
    corners = integral(pos_reg.reshape(num_pos * 4, bins)).reshape(num_pos, 4)
    pred = torch.cat([centers - corners[:, :2], centers + corners[:, 2:]], 1)
    iou = aligned_iou_giou(pred.detach(), gt, giou=False)
    score = torch.zeros(b * n).index_put((pos_idx,), iou, accumulate=True)
    loss_cls = qfl(one_hot * score[:, None])

    avg_factor = weight.sum().clamp_min(1.0)
    loss_bbox = ((1 - aligned_iou_giou(pred, gt, giou=True)) * weight).sum() * spec.w_bbox / avg_factor
    dist = torch.cat([centers - gt[:, :2], gt[:, 2:] - centers], 1).clamp(0, spec.reg_max - 0.1)
    dfl = distribution_focal_loss(pos_reg.reshape(num_pos * 4, bins), dist.reshape(-1))
    loss_dfl = (dfl * weight.repeat_interleave(4)).sum() / 4.0 * spec.w_dfl / avg_factor
    return {"loss_cls": loss_cls, "loss_bbox": loss_bbox, "loss_dfl": loss_dfl}


def kl_div_rows(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """kdet `kl_div_rows(.., ClassMean)`: T^2 / D * sum_j p^T_j (ln p^T_j - ln p^S_j)."""
    t_logp = F.log_softmax(teacher.detach() / t, 1)
    s_logp = F.log_softmax(student / t, 1)
    return ((t_logp - s_logp) * t_logp.exp()).sum(1) * (t * t / student.shape[1])


def vlr_weights(cfg: dict, priors: Priors, batch: Batch) -> torch.Tensor:
    """kdet `vlr_weights` (official `get_vlr_region`): priors with
    `alpha t_g <= DIoU(prior, g) < t_g` take their IoU with g (max over g); `[B, N]`."""
    gt, valid_gt = batch.gt_boxes, batch.gt_valid
    _, _, thr, ious, _ = atss_statistics(priors, gt, cfg["vlr_topk"])
    p = priors.boxes  # [N, 4]
    g4 = gt.unsqueeze(-2)  # [B, G, 1, 4]
    cw = (torch.maximum(p[:, 2], g4[..., 2]) - torch.minimum(p[:, 0], g4[..., 0])).clamp_min(0)
    ch = (torch.maximum(p[:, 3], g4[..., 3]) - torch.minimum(p[:, 1], g4[..., 1])).clamp_min(0)
    dx = 0.5 * ((g4[..., 0] + g4[..., 2]) - (p[:, 0] + p[:, 2]))
    dy = 0.5 * ((g4[..., 1] + g4[..., 3]) - (p[:, 1] + p[:, 3]))
    penalty = (dx * dx + dy * dy) / (cw * cw + ch * ch).clamp_min(1e-6)
    if cfg["vlr_diou"] == "anchor_iof":
        iw = (torch.minimum(p[:, 2], g4[..., 2]) - torch.maximum(p[:, 0], g4[..., 0])).clamp_min(0)
        ih = (torch.minimum(p[:, 3], g4[..., 3]) - torch.maximum(p[:, 1], g4[..., 1])).clamp_min(0)
        area = (p[:, 2] - p[:, 0]).clamp_min(0) * (p[:, 3] - p[:, 1]).clamp_min(0)
        overlap = torch.where(area > 0, iw * ih / area.clamp_min(1e-30), torch.zeros_like(iw))
    else:
        overlap = ious
    diou = overlap - penalty  # [B, G, N]
    t = thr.unsqueeze(-1)
    inside = (diou >= cfg["vlr_alpha"] * t) & (diou < t) & valid_gt.unsqueeze(-1)
    inside &= priors.valid.unsqueeze(1)
    return torch.where(inside, ious, torch.zeros_like(ious)).amax(dim=1).clamp_min(0)


def ld_loss(cfg: dict, spec: ModelSpec, student: list, teacher: list, priors: Priors,
            assign: Assignment, vlr: torch.Tensor) -> dict:
    """kdet `ld_loss`: per level over all images, then summed over levels; each term times
    its own weight (the recipe weight is applied by the caller)."""
    k, bins = spec.num_classes, spec.reg_max + 1
    ld, vl, kd = [], [], []
    for (start, end), (s_cls, s_reg), (t_cls, t_reg) in zip(priors.bounds, student, teacher):
        s_cls = s_cls.permute(0, 2, 3, 1).reshape(-1, k)
        t_cls = t_cls.permute(0, 2, 3, 1).reshape(-1, k)
        s_reg = s_reg.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
        t_reg = t_reg.permute(0, 2, 3, 1).reshape(-1, 4 * bins)
        zero = s_reg.sum() * 0.0
        pos_rows = assign.pos[:, start:end].reshape(-1).nonzero().squeeze(1)
        p = pos_rows.numel()
        if p > 0:
            w = s_cls.detach()[pos_rows].sigmoid().max(1).values.repeat_interleave(4)
            rows = kl_div_rows(
                s_reg[pos_rows].reshape(p * 4, bins), t_reg[pos_rows].reshape(p * 4, bins),
                cfg["ld_temperature"],
            )
            ld.append((rows * w).sum() / 4.0)
            kd.append(kl_div_rows(s_cls[pos_rows], t_cls[pos_rows], cfg["kd_temperature"]).sum() / p)
        else:
            ld.append(zero)
            kd.append(zero)
        v = vlr[:, start:end].reshape(-1)
        vlr_rows = (v > 0).nonzero().squeeze(1)
        r = vlr_rows.numel()
        if r > 0:
            rows = kl_div_rows(
                s_reg[vlr_rows].reshape(r * 4, bins), t_reg[vlr_rows].reshape(r * 4, bins),
                cfg["vlr_temperature"],
            )
            vl.append((rows * v[vlr_rows].repeat_interleave(4)).sum() / 16.0)
        else:
            vl.append(zero)
    return {
        "kd.ld.ld": sum(ld) * cfg["ld_weight"],
        "kd.ld.vlr": sum(vl) * cfg["vlr_weight"],
        "kd.ld.kd": sum(kd) * cfg["kd_weight"],
    }


# --------------------------------------------------------------------------- steps


def level_sizes(levels: list) -> list:
    return [tuple(c.shape[-2:]) for c, _ in levels]


class Trainer:
    """One student with its optimizer (SGD momentum 0.9 as `torch.optim.SGD` and kdet's
    `SgdConfig`, or AdamW as the configs' `optimizer`)."""

    def __init__(self, model: GFLDetector, optimizer: str, lr: float, weight_decay: float):
        self.model = model.train()
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        else:
            self.opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8,
                                         weight_decay=weight_decay)

    def step(self, batch: Batch, teacher: GFLDetector | None = None, ld: tuple | None = None) -> dict:
        spec = self.model.spec
        self.opt.zero_grad(set_to_none=True)
        levels = self.model(batch.images)
        priors = grid_priors(spec, level_sizes(levels), batch.image_hw)
        assign = atss_assign(priors, batch, spec.topk)
        losses = gfl_loss(spec, levels, priors, assign, batch)
        if teacher is not None:
            cfg, weight = ld
            with torch.no_grad():
                t_levels = teacher(batch.images)
            vlr = vlr_weights(cfg, priors, batch)
            for name, v in ld_loss(cfg, spec, levels, t_levels, priors, assign, vlr).items():
                losses[name] = v * weight
        total = sum(losses.values())
        total.backward()
        self.opt.step()
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["total"] = float(total.detach())
        out["num_pos"] = int(assign.pos.sum())
        return out


def stats(ms: list) -> dict:
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms)}


def run_sanity(args, s_spec, t_spec, ld, batches, seed) -> dict:
    torch.manual_seed(seed)
    trainer = Trainer(GFLDetector(s_spec), args.optimizer, args.lr, args.weight_decay)
    print(f"student, {args.optimizer} lr {args.lr}: {len(batches)} steps on distinct batches of {args.batch}")
    history = []
    for i, b in enumerate(batches):
        out = trainer.step(b)
        history.append(out)
        print(
            f"  step {i:3d}  total {out['total']:.4f}  cls {out['loss_cls']:.4f}  "
            f"bbox {out['loss_bbox']:.4f}  dfl {out['loss_dfl']:.4f}  positives {out['num_pos']}"
        )
    m = min(5, len(history) // 2)
    first = statistics.mean(h["total"] for h in history[:m])
    last = statistics.mean(h["total"] for h in history[-m:])
    print(f"  mean total loss, first {m} steps {first:.4f} -> last {m} steps {last:.4f}")
    torch.manual_seed(seed + 1)
    teacher = GFLDetector(t_spec)
    calibrate_bn(teacher, batches[:2])
    dtrainer = Trainer(GFLDetector(s_spec), args.optimizer, args.lr, args.weight_decay)
    print("distilled student (LD), first 3 steps:")
    kd_hist = []
    for i, b in enumerate(batches[:3]):
        out = dtrainer.step(b, teacher, ld)
        kd_hist.append(out)
        print("  step {}  total {:.4f}  ".format(i, out["total"])
              + "  ".join(f"{k} {v:.4f}" for k, v in out.items() if k.startswith("kd.")))
    return {"student_losses": history, "first_mean": first, "last_mean": last, "distill_losses": kd_hist}


def self_test(spec: ModelSpec) -> None:
    """The hand-derived cases of kdet's unit tests (`assigners/atss.rs`,
    `heads/gfl/loss.rs`), run on this file's assignment and loss."""
    import dataclasses

    def batch(boxes, hw=(32, 32), labels=None):
        n = len(boxes)
        gt = torch.tensor(boxes, dtype=torch.float32).reshape(1, max(n, 1), 4) if n else torch.zeros(1, 1, 4)
        lab = torch.tensor([labels or [0] * n]) if n else torch.zeros(1, 1, dtype=torch.long)
        return Batch(None, gt, lab, torch.tensor([[True] * n]) if n else torch.zeros(1, 1, dtype=torch.bool),
                     [hw])

    def close(a, b, tol=1e-6):
        return abs(float(a) - float(b)) < tol

    one = dataclasses.replace(spec, strides=(8,), octave_base_scale=2.0, center_offset=0.0)
    pri = grid_priors(one, [(4, 4)], [(32, 32)])
    positives = lambda a: a.pos[0].nonzero().squeeze(1).tolist()
    # single_box_selects_the_overlapping_candidates
    b = batch([[4.0, 4.0, 20.0, 20.0]])
    a = atss_assign(pri, b, 4)
    assert positives(a) == [5, 6, 9, 10], positives(a)
    assert all(close(a.max_iou[0, i], 9 / 23) for i in [5, 6, 9, 10])
    cand, _, thr, _, _ = atss_statistics(pri, b.gt_boxes, 4)
    assert cand[0, 0].tolist() == [5, 6, 9, 10] and close(thr[0, 0], 9 / 23)
    # mean_plus_std_threshold_drops_weak_candidates (ties broken by prior index)
    b = batch([[0.0, 0.0, 16.0, 16.0]])
    cand, _, thr, _, _ = atss_statistics(pri, b.gt_boxes, 3)
    assert cand[0, 0].tolist() == [5, 1, 4], cand
    assert close(thr[0, 0], (5 + math.sqrt(12)) / 9)
    a = atss_assign(pri, b, 3)
    assert positives(a) == [5] and close(a.max_iou[0, 1], 1 / 3)
    # ground_truth_without_a_centre_inside_gets_no_positive
    assert atss_assign(pri, batch([[10.0, 10.0, 12.0, 12.0]]), 9).pos.sum() == 0
    assert atss_assign(pri, batch([[8.0, 8.0, 8.0, 8.0]]), 9).pos.sum() == 0
    # competing_ground_truths_take_the_higher_iou
    a = atss_assign(pri, batch([[0.0, 0.0, 16.0, 16.0], [2.0, 2.0, 20.0, 18.0]]), 1)
    assert positives(a) == [5] and int(a.gt_index[0, 5]) == 0
    a = atss_assign(pri, batch([[2.0, 2.0, 20.0, 18.0], [0.0, 0.0, 16.0, 16.0]]), 1)
    assert int(a.gt_index[0, 5]) == 1
    # padding_priors_are_ignored: a 16x16 image in a 32x32 batch
    pri16 = grid_priors(one, [(4, 4)], [(16, 16)])
    a = atss_assign(pri16, batch([[0.0, 0.0, 16.0, 16.0]], hw=(16, 16)), 9)
    assert int((~a.ignore).sum()) == 4 and not bool((a.pos & a.ignore).any())
    # reductions_match_hand_derived_values (heads/gfl/loss.rs)
    tiny = dataclasses.replace(spec, num_classes=1, reg_max=4, strides=(8,), octave_base_scale=8.0,
                               center_offset=0.0, topk=1, qfl_beta=2.0, w_cls=1.0, w_dfl=0.25, w_bbox=2.0)
    b = batch([[2.0, 4.0, 18.0, 14.0]], hw=(16, 16))
    pri = grid_priors(tiny, [(2, 2)], [(16, 16)])
    a = atss_assign(pri, b, tiny.topk)
    assert positives(a) == [3], positives(a)
    levels = [(torch.zeros(1, 1, 2, 2), torch.zeros(1, 20, 2, 2))]
    got = gfl_loss(tiny, levels, pri, a, b)
    ln2 = math.log(2)
    want = {"loss_cls": ln2 * (0.75 + (0.15625 - 0.5) ** 2), "loss_bbox": 0.84375, "loss_dfl": 0.125 * math.log(5)}
    for k, v in want.items():
        assert close(got[k], v, 1e-5), (k, float(got[k]), v)
    # ld.rs tests: hand_derived_single_prior
    t2 = {**LD_DEFAULTS, "ld_temperature": 2.0, "vlr_temperature": 2.0, "kd_temperature": 2.0}
    single = dataclasses.replace(spec, num_classes=2, reg_max=1, strides=(8,), octave_base_scale=8.0)
    pri = grid_priors(single, [(1, 1)], [(8, 8)])
    l3 = 2.0 * math.log(3)
    student = [(torch.zeros(1, 2, 1, 1), torch.zeros(1, 8, 1, 1))]
    teacher = [(torch.tensor([l3, 0.0]).reshape(1, 2, 1, 1), torch.tensor([l3, 0.0] * 4).reshape(1, 8, 1, 1))]
    a = Assignment(torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.long),
                   torch.zeros(1, 1, dtype=torch.bool), torch.zeros(1, 1))
    got = ld_loss(t2, single, student, teacher, pri, a, torch.tensor([[0.5]]))
    ell = 2.0 * (0.75 * math.log(3) - math.log(2))
    for k, v in {"kd.ld.ld": 0.125 * ell, "kd.ld.vlr": 0.03125 * ell, "kd.ld.kd": 10 * ell}.items():
        assert abs(float(got[k]) / v - 1) < 1e-5, (k, float(got[k]), v)
    # vlr_matches_hand_computed_bounds, official_diou_uses_the_anchor_area,
    # vlr_skips_padding_crowd_and_empty_images
    pri = grid_priors(one, [(4, 4)], [(32, 32)])
    for kind in ("anchor_iof", "iou"):
        v = vlr_weights({**LD_DEFAULTS, "vlr_topk": 3, "vlr_diou": kind}, pri, batch([[0.0, 0.0, 16.0, 16.0]]))
        want = torch.zeros(16)
        want[[1, 4, 6, 9]] = 1 / 3
        assert torch.allclose(v[0], want, atol=1e-6), (kind, v)
    b = batch([[4.0, 4.0, 20.0, 20.0]])
    paper = vlr_weights({**LD_DEFAULTS, "vlr_topk": 4, "vlr_diou": "iou"}, pri, b)
    official = vlr_weights({**LD_DEFAULTS, "vlr_topk": 4}, pri, b)
    assert close(paper[0, 5], 9 / 23) and float(official[0, 5]) == 0.0
    v = vlr_weights({**LD_DEFAULTS, "vlr_topk": 3}, pri16, batch([[0.0, 0.0, 16.0, 16.0]], hw=(16, 16)))
    want = torch.zeros(16)
    want[[1, 4]] = 1 / 3
    assert torch.allclose(v[0], want, atol=1e-6), v
    print("self-test: kdet's hand-derived ATSS, GFL-loss and LD cases pass")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student-config", default="configs/gfl_synth_student.toml")
    ap.add_argument("--teacher-config", default="configs/gfl_synth_teacher.toml")
    ap.add_argument("--distill-config", default="configs/distill/ld_gfl_synth.toml")
    ap.add_argument("--data", default="data/synth/train", help="COCO split: annotations.json + images/")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads [default: torch's]")
    ap.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="[default: 0.01 sgd, 0.001 adamw]")
    ap.add_argument("--weight-decay", type=float, default=None, help="[default: 1e-4 sgd, 0.05 adamw]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-infer", action="store_true", help="skip the inference timings")
    ap.add_argument("--sanity-steps", type=int, default=0,
                    help="instead of timing: train a fresh student this many steps and print the losses")
    ap.add_argument("--self-test", action="store_true",
                    help="only run kdet's hand-derived ATSS / GFL-loss unit cases on this code")
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda / cuda:N (tensors and models made there; every timed "
                         "region ends with torch.cuda.synchronize)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: this torch sees no CUDA device")
        # Factory functions (zeros, arange, full, tensor) and modules made from here on live
        # on the GPU, so the reference code needs no per-call `device=`.
        torch.set_default_device(device)
        sync = lambda: torch.cuda.synchronize(device)
    elif device.type == "cpu":
        sync = lambda: None
    else:
        raise SystemExit(f"--device {args.device}: expected cpu or cuda[:N]")
    if args.lr is None:
        args.lr = 0.01 if args.optimizer == "sgd" else 0.001
    if args.weight_decay is None:
        args.weight_decay = 1e-4 if args.optimizer == "sgd" else 0.05
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def rel(p):
        p = Path(p)
        return p if p.is_absolute() else REPO / p

    s_spec = ModelSpec.from_experiment(load_experiment(rel(args.student_config)), args.student_config)
    t_spec = ModelSpec.from_experiment(load_experiment(rel(args.teacher_config)), args.teacher_config)
    dist_exp = load_experiment(rel(args.distill_config))
    ld = ld_settings(dist_exp)
    d_spec = ModelSpec.from_experiment(dist_exp, args.distill_config)
    if d_spec != s_spec:
        print(f"warning: the student of {args.distill_config} differs from {args.student_config}",
              file=sys.stderr)
    for name, a, b in [("strides", s_spec.strides, t_spec.strides), ("reg_max", s_spec.reg_max, t_spec.reg_max),
                       ("num_classes", s_spec.num_classes, t_spec.num_classes)]:
        if a != b:
            raise SystemExit(f"LD needs equal {name} in teacher and student: {a} vs {b}")
    if args.self_test:
        self_test(s_spec)
        return 0

    data = rel(args.data)
    if not (data / "annotations.json").exists():
        raise SystemExit(f"{data}/annotations.json not found: write the built-in data first "
                         "(`kdet data synth --out data/synth`, or any kdet run on the synth configs)")
    records, num_classes = load_coco_split(data)
    if num_classes != s_spec.num_classes:
        raise SystemExit(f"{data}: {num_classes} categories, the configs {s_spec.num_classes} classes")

    n_batches = args.sanity_steps if args.sanity_steps else args.warmup + args.iters
    t0 = time.perf_counter()
    batches = make_batches(records, args.batch, n_batches)
    load_s = time.perf_counter() - t0

    torch.manual_seed(args.seed)
    student = GFLDetector(s_spec)
    torch.manual_seed(args.seed + 1)
    teacher = GFLDetector(t_spec)
    params = {"student": parameter_counts(student), "teacher": parameter_counts(teacher)}
    for who, cfg in (("student", args.student_config), ("teacher", args.teacher_config)):
        try:
            key = str(rel(cfg).resolve().relative_to(REPO))
        except ValueError:
            key = str(cfg)
        expected = KDET_PARAMETERS.get(key)
        params[who]["kdet_reported"] = expected
        params[who]["matches_kdet"] = expected is None or expected == params[who]["kdet_count"]
        if not params[who]["matches_kdet"]:
            print(f"warning: {who} has {params[who]['kdet_count']} parameters (kdet's count), "
                  f"kdet reported {expected}", file=sys.stderr)

    result = {
        "torch_version": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "input_size": list(batches[0].images.shape[-2:]),
        "warmup": args.warmup,
        "iters": args.iters,
        "optimizer": {"type": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
                      **({"momentum": 0.9} if args.optimizer == "sgd" else {})},
        "ld": {**ld[0], "recipe_weight": ld[1]},
        "parameters": params,
        "data": str(args.data),
        "load_seconds": load_s,
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "loadavg_start": os.getloadavg()[0],
    }
    print(f"torch {torch.__version__} on {result['device']} ({result['device_name']}), {torch.get_num_threads()} threads; batch {args.batch} of "
          f"{result['input_size'][0]}x{result['input_size'][1]}; {len(batches)} batches loaded in {load_s:.1f} s; "
          f"load average {result['loadavg_start']:.2f}")
    cores = os.cpu_count() or 1
    if result["loadavg_start"] > 0.5 * cores and not os.environ.get("OMP_WAIT_POLICY"):
        print(f"warning: load average {result['loadavg_start']:.1f} on {cores} CPUs: torch's OpenMP threads "
              "spin-wait on a busy machine (steps can take 10-30x longer); consider OMP_WAIT_POLICY=PASSIVE",
              file=sys.stderr)
    for who in ("student", "teacher"):
        p = params[who]
        print(f"{who}: {p['trainable']} trainable parameters + {p['bn_running_stats']} BN running stats "
              f"= {p['kdet_count']} (kdet reports {p['kdet_reported']}: "
              f"{'equal' if p['matches_kdet'] else 'DIFFERENT'})")

    if args.sanity_steps:
        result["sanity"] = run_sanity(args, s_spec, t_spec, ld, batches, args.seed)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0

    # Teacher: untrained weights, eval mode with BN statistics from two batches.
    calibrate_bn(teacher, batches[:2])
    student_alone = Trainer(student, args.optimizer, args.lr, args.weight_decay)
    torch.manual_seed(args.seed)
    student_kd = Trainer(GFLDetector(s_spec), args.optimizer, args.lr, args.weight_decay)

    def teacher_forward(b):
        with torch.no_grad():
            out = teacher(b.images)
        return out

    work = {
        "student_step_ms": lambda b: student_alone.step(b),
        "teacher_forward_ms": teacher_forward,
        "distill_step_ms": lambda b: student_kd.step(b, teacher, ld),
    }
    names = list(work)
    times = {n: [] for n in names}
    last = {}
    for i, b in enumerate(batches):
        order = names[i % 3:] + names[: i % 3]
        for name in order:
            t = time.perf_counter()
            out = work[name](b)
            sync()
            dt = (time.perf_counter() - t) * 1e3
            if i >= args.warmup:
                times[name].append(dt)
            if isinstance(out, dict):
                last[name] = out
    timings = {n: stats(v) for n, v in times.items()}
    result["last_losses"] = last

    if not args.no_infer:
        infer_student = copy.deepcopy(student).eval()
        calibrate_bn(infer_student, batches[:2])
        models = {"teacher": teacher.eval(), "student": infer_student}
        infer = {m: {} for m in models}
        for bs in sorted({1, args.batch}):
            images = batches[0].images[:bs].contiguous()
            per = {m: [] for m in models}
            with torch.no_grad():
                for i in range(args.warmup + args.iters):
                    for m, model in (list(models.items()) if i % 2 == 0 else list(models.items())[::-1]):
                        t = time.perf_counter()
                        model(images)
                        sync()
                        dt = (time.perf_counter() - t) * 1e3 / bs
                        if i >= args.warmup:
                            per[m].append(dt)
            for m in models:
                infer[m][f"batch{bs}"] = stats(per[m])
        timings["infer_forward_ms_per_image"] = infer
    result["timings"] = timings
    result["loadavg_end"] = os.getloadavg()[0]

    print(f"{'timing (ms)':<34}{'median':>10}{'min':>10}{'max':>10}")
    for n in names:
        t = timings[n]
        print(f"{n:<34}{t['median']:>10.2f}{t['min']:>10.2f}{t['max']:>10.2f}")
    if "infer_forward_ms_per_image" in timings:
        for m, per in timings["infer_forward_ms_per_image"].items():
            for bs, t in per.items():
                label = f"infer {m} {bs} (per image)"
                print(f"{label:<34}{t['median']:>10.2f}{t['min']:>10.2f}{t['max']:>10.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
