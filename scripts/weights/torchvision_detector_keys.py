"""Writes the full state-dict key lists (with shapes and dtypes) of torchvision's
RetinaNet and FCOS detectors, `retinanet_resnet50_fpn` and `fcos_resnet50_fpn`, built
with `weights=None, weights_backbone=None` (so the backbone norm is `nn.BatchNorm2d`,
with `num_batches_tracked`; with pretrained weights torchvision uses FrozenBatchNorm2d,
whose keys are the same less `num_batches_tracked`), and `num_classes=91` (default).

kdet's detector remap tables (crates/kdet-models/src/weights/detectors.rs) are tested
against these lists: for a kdet config of the same architecture every key maps onto
exactly one kdet tensor (no missing, no unexpected) or is ignored by a documented rule.

Besides the keys, the file records the architecture facts the remap relies on, read from
the built models (not restated by hand): the FPN's extra-block input (`use_P5`), the
anchor sizes and aspect ratios, FCOS's GroupNorm groups.

    python torchvision_detector_keys.py OUT.json
"""

import json
import sys

import torch
import torchvision
from torchvision.models import detection


def key_list(model):
    return [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")]
        for k, v in model.state_dict().items()
    ]


def facts(model):
    fpn = model.backbone.fpn
    out = {
        "fpn_extra_blocks": type(fpn.extra_blocks).__name__,
        "fpn_extra_from_p5": bool(getattr(fpn.extra_blocks, "use_P5", False)),
        "backbone_norm": type(model.backbone.body.bn1).__name__,
    }
    gen = model.anchor_generator
    out["anchor_sizes"] = [list(s) for s in gen.sizes]
    out["anchor_aspect_ratios"] = [list(r) for r in gen.aspect_ratios]
    norms = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    out["head_group_norm_groups"] = sorted({m.num_groups for m in norms})
    return out


def main(out_path):
    torch.manual_seed(0)
    models = {}
    arch = {}
    for name in ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"]:
        model = getattr(detection, name)(weights=None, weights_backbone=None)
        models[name] = key_list(model)
        arch[name] = facts(model)
    out = {
        "generator": "scripts/weights/torchvision_detector_keys.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "architecture": arch,
        "models": models,
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
