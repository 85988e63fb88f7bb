"""Writes the full state-dict key lists (with shapes and dtypes) of torchvision's
resnet18, resnet34, resnet50 and mobilenet_v2, built with `weights=None`.

kdet's remap tables (crates/kdet-models/src/weights/) are tested against these lists:
every key must map onto exactly one kdet tensor or be ignored by a documented rule.

    python torchvision_keys.py OUT.json
"""

import json
import sys

import torch
import torchvision
from torchvision import models


def key_list(model):
    return [
        [k, list(v.shape), str(v.dtype).replace("torch.", "")]
        for k, v in model.state_dict().items()
    ]


def main(out_path):
    torch.manual_seed(0)
    out = {
        "generator": "scripts/weights/torchvision_keys.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "models": {
            name: key_list(getattr(models, name)(weights=None))
            for name in ["resnet18", "resnet34", "resnet50", "mobilenet_v2"]
        },
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
