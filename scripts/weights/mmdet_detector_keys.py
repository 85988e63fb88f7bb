"""Writes the full state-dict key lists (with shapes and dtypes) of mmdetection 3.3.0's
ResNet-50 + FPN dense detectors, built from the configs shipped in the mmdet wheel
(`mmdet/.mim/configs`), and the architecture facts kdet's configs must agree with, read
from the built models (not restated by hand):

    gfl_r50_fpn_1x_coco
    atss_r50_fpn_1x_coco
    retinanet_r50_fpn_1x_coco
    fcos_r50-caffe_fpn_gn-head_1x_coco
    fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco

Only the models' construction is run (`MODELS.build(cfg.model)`), never their init from
pretrained weights nor any mmcv op, so mmcv-lite (no compiled ops) is enough. Imports the
build never uses (OpenCV, matplotlib, pycocotools, shapely, scipy, `mmcv.ops`) are
replaced by empty stand-in modules (`mmdet_stubs.py`), so that they need not be installed.

kdet's mmdet remap (crates/kdet-models/src/weights/mmdet.rs) is tested against these
lists: for a kdet config of the same architecture every key maps onto exactly one kdet
tensor of the same shape, or is ignored by a documented rule.

    python mmdet_detector_keys.py OUT.json
"""

import json
import os
import sys

import mmdet_stubs  # noqa: F401  (before mmdet: stands in for what the build never uses)

import mmdet  # noqa: E402
import mmengine  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

CONFIGS = {
    "gfl_r50_fpn_1x_coco": "gfl/gfl_r50_fpn_1x_coco.py",
    "atss_r50_fpn_1x_coco": "atss/atss_r50_fpn_1x_coco.py",
    "retinanet_r50_fpn_1x_coco": "retinanet/retinanet_r50_fpn_1x_coco.py",
    "fcos_r50-caffe_fpn_gn-head_1x_coco": "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
    "fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco": (
        "fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py"
    ),
}


def key_list(model):
    return [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")]
        for k, v in model.state_dict().items()
    ]


def facts(model):
    backbone, neck, head = model.backbone, model.neck, model.bbox_head
    out = {
        "detector": type(model).__name__,
        "backbone": type(backbone).__name__,
        "backbone_depth": backbone.depth,
        "backbone_style": backbone.style,
        "backbone_norm": type(backbone.norm1).__name__,
        "fpn_add_extra_convs": neck.add_extra_convs,
        "fpn_relu_before_extra_convs": neck.relu_before_extra_convs,
        "fpn_start_level": neck.start_level,
        "fpn_num_outs": neck.num_outs,
        "fpn_out_channels": neck.out_channels,
        "head": type(head).__name__,
        "num_classes": head.num_classes,
        "cls_out_channels": head.cls_out_channels,
        "stacked_convs": head.stacked_convs,
        "feat_channels": head.feat_channels,
    }
    tower = head.cls_convs[0]
    out["tower_norm"] = type(tower.norm).__name__ if tower.with_norm else None
    out["tower_norm_name"] = tower.norm_name
    out["tower_conv_bias"] = tower.conv.bias is not None
    groups = [m.num_groups for m in head.modules() if isinstance(m, torch.nn.GroupNorm)]
    out["head_group_norm_groups"] = sorted(set(groups))
    gen = head.prior_generator
    out["prior_strides"] = [list(s) for s in gen.strides]
    out["num_base_priors"] = gen.num_base_priors
    if hasattr(gen, "octave_base_scale"):
        out["anchor_octave_base_scale"] = gen.octave_base_scale
        out["anchor_scales_per_octave"] = gen.scales_per_octave
        out["anchor_ratios"] = [float(r) for r in gen.ratios]
        out["anchor_center_offset"] = gen.center_offset
    if hasattr(gen, "offset"):
        out["point_offset"] = gen.offset
    for attr in ["reg_max", "norm_on_bbox", "centerness_on_reg", "center_sampling"]:
        if hasattr(head, attr):
            out[attr] = getattr(head, attr)
    return out


def main(out_path):
    register_all_modules()
    root = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs")
    models, arch = {}, {}
    for name, rel in CONFIGS.items():
        cfg = Config.fromfile(os.path.join(root, rel))
        model = MODELS.build(cfg.model)
        models[name] = key_list(model)
        arch[name] = facts(model)
    head = {
        "generator": "scripts/weights/mmdet_detector_keys.py",
        "torch": torch.__version__,
        "mmdet": mmdet.__version__,
        "mmengine": mmengine.__version__,
        "architecture": arch,
    }
    # One key per line: compact, and diffs stay readable.
    with open(out_path, "w") as f:
        text = json.dumps(head, indent=1)
        f.write(text[: text.rindex("}")].rstrip() + ',\n"models": {\n')
        for m, (name, keys) in enumerate(models.items()):
            f.write(f"{json.dumps(name)}: [\n")
            for i, k in enumerate(keys):
                f.write(json.dumps(k) + ("," if i + 1 < len(keys) else "") + "\n")
            f.write("]" + ("," if m + 1 < len(models) else "") + "\n")
        f.write("}\n}\n")


if __name__ == "__main__":
    main(sys.argv[1])
