"""Forward passes of tiny mmdetection 3.3.0 detectors (GFL, ATSS, RetinaNet, FCOS: ResNet-18
+ FPN + head, built by mmdet from the configs below) whose every tensor holds a known
value, for kdet to reproduce through its mmdet weight import (crates/kdet-models/src/
weights/mmdet.rs). Writes, per detector, its key list (shapes, dtypes) and its head outputs
on a fixed input in eval mode; no weights (kdet recomputes them from the formula).

Values: `known_values.py`'s formula over the sorted key list (hash `u` of the key's
position `t` and the flat index), plus, for keys it has no rule for:
    mmcv `Scale.scale` (0-d) of level l (`bbox_head.scales.{l}.scale`):  0.75 + 0.125 * l
    GFL `integral.project`:      left as built (linspace(0, reg_max, reg_max + 1))
Input: `known_values.py`'s `sin(0.05 * i + 0.2)`, shape INPUT_SHAPE.

Head outputs are stored per detector, output kind and level, flattened (C-order, batch
1): every STEP-th value with its index, and the sum of all values.

    python mmdet_forward.py OUT.json
"""

import json
import math
import sys

import mmdet_stubs  # noqa: F401  (before mmdet: stands in for what the build never uses)

import mmdet  # noqa: E402
import torch  # noqa: E402
from known_values import known_value  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

INPUT_SHAPE = [1, 3, 64, 64]
NUM_CLASSES = 2
STEP = 7

BACKBONE = dict(
    type="ResNet",
    depth=18,
    base_channels=4,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type="BN", requires_grad=True),
    norm_eval=True,
    style="pytorch",
)


def fpn(extra, relu):
    return dict(
        type="FPN",
        in_channels=[4, 8, 16, 32],
        out_channels=8,
        start_level=1,
        add_extra_convs=extra,
        num_outs=5,
        relu_before_extra_convs=relu,
    )


GN = dict(type="GN", num_groups=2, requires_grad=True)
STRIDES = [8, 16, 32, 64, 128]
HEAD = dict(num_classes=NUM_CLASSES, in_channels=8, feat_channels=8, stacked_convs=2)
SQUARE_ANCHOR = dict(
    type="AnchorGenerator", ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=STRIDES
)

# name -> (detector type, neck, head): the R50 COCO configs' structure, narrowed.
MODELS_TINY = {
    "gfl": ("GFL", fpn("on_output", False), dict(
        type="GFLHead", norm_cfg=GN, reg_max=4, anchor_generator=SQUARE_ANCHOR, **HEAD)),
    "atss": ("ATSS", fpn("on_output", False), dict(
        type="ATSSHead", norm_cfg=GN, anchor_generator=SQUARE_ANCHOR, **HEAD)),
    "retinanet": ("RetinaNet", fpn("on_input", False), dict(
        type="RetinaHead",
        anchor_generator=dict(
            type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0], strides=STRIDES),
        **HEAD)),
    # The center-normbbox-centeronreg-giou variant (tower conv bias, ReLU * stride).
    "fcos_normbbox": ("FCOS", fpn("on_output", True), dict(
        type="FCOSHead", norm_cfg=GN, strides=STRIDES, norm_on_bbox=True,
        centerness_on_reg=True, conv_bias=True, **HEAD)),
    # The plain head (no tower conv bias, exp, centerness on the classification tower).
    "fcos": ("FCOS", fpn("on_output", True), dict(
        type="FCOSHead", norm_cfg=GN, strides=STRIDES, **HEAD)),
}

KINDS = {3: ["cls_logits", "box_regression", "centerness"], 2: ["cls_logits", "box_regression"]}


def value(key, t, shape, built):
    if key.endswith("integral.project"):
        return built
    if key.endswith(".scale"):
        level = int(key.split(".")[-2])
        return torch.tensor(0.75 + 0.125 * level, dtype=torch.float32)
    return known_value(key, t, shape)


def fixed_input():
    n = math.prod(INPUT_SHAPE)
    i = torch.arange(n, dtype=torch.float64)
    return torch.sin(0.05 * i + 0.2).reshape(INPUT_SHAPE).to(torch.float32)


def main(out_path):
    torch.set_num_threads(1)
    register_all_modules()
    out = {
        "generator": "scripts/weights/mmdet_forward.py",
        "torch": torch.__version__,
        "mmdet": mmdet.__version__,
        "input_shape": INPUT_SHAPE,
        "step": STEP,
        "models": {},
    }
    for name, (kind, neck, head) in MODELS_TINY.items():
        model = MODELS.build(dict(type=kind, backbone=BACKBONE, neck=neck, bbox_head=head))
        model.eval()
        built = model.state_dict()
        keys = sorted(built)
        sd = {k: value(k, t, list(built[k].shape), built[k]) for t, k in enumerate(keys)}
        model.load_state_dict(sd)
        with torch.no_grad():
            maps = model.bbox_head(model.neck(model.backbone(fixed_input())))
        outputs = {}
        for kind_name, levels in zip(KINDS[len(maps)], maps):
            outputs[kind_name] = []
            for level in levels:
                flat = level.reshape(-1).to(torch.float64)
                outputs[kind_name].append({
                    "shape": list(level.shape),
                    "sum": flat.sum().item(),
                    "samples": [[i, flat[i].item()] for i in range(0, flat.numel(), STEP)],
                })
        out["models"][name] = {
            "keys": [[k, list(built[k].shape), str(built[k].dtype).replace("torch.", "")]
                     for k in keys],
            "outputs": outputs,
        }
    with open(out_path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
