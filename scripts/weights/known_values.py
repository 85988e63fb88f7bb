"""Small torchvision-layout ResNets whose every tensor holds known values, saved as
`.pth` (zip), legacy `.pth` (pre-1.6 format), nested `.pth` and `.safetensors`, with
the PyTorch forward output of each stage on a fixed input.

Values, for the tensor at position `t` of the sorted key list and flat (row-major)
element index `i`: an integer hash (exact in any language) mapped to [-1, 1), then scaled
per kind (computed in float64, stored as float32):

    h = (i * 2654435761 + t * 40503 + 12345) mod 2^32
    u = h / 2^31 - 1
    conv weight [O, I, kh, kw]:  u * sqrt(3 / (I * kh * kw))   (variance 1 / fan_in)
    BN weight:                   1 + 0.2 * u
    BN bias, BN running_mean:    0.1 * u
    BN running_var:              0.75 + 0.25 * u
    BN num_batches_tracked:      t (int64)

(A hash rather than a smooth function: smooth weights add up coherently in a conv and
the activations grow to 1e6, where float32 cannot resolve 1e-4.)

Input `x` of shape [2, 3, 40, 48]: `x[i] = sin(0.05 * i + 0.2)` over the flat index.
The Rust tests (crates/kdet-models/tests/models/weights.rs) recompute both formulas, so
a tensor that lands in the wrong parameter, or in the right one transposed, is caught.

    python known_values.py OUT_DIR
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

INPUT_SHAPE = [2, 3, 40, 48]

# name -> (block, stem channels, widths (torchvision `planes`), depths)
ARCHS = {
    # layer1 keeps its width (no downsample, two blocks); layers 2-4 project.
    "tiny_resnet_basic": (BasicBlock, 8, [8, 16, 16, 24], [2, 1, 1, 1]),
    # Bottleneck: expansion 4, so layer1 already projects 8 -> 16 channels.
    "tiny_resnet_bottleneck": (Bottleneck, 8, [4, 8, 8, 8], [1, 2, 1, 1]),
}


class TinyResNet(nn.Module):
    """torchvision's `ResNet` without avgpool/fc, with free stem/stage widths (torchvision's
    own class fixes them at 64/128/256/512). Blocks are torchvision's `BasicBlock` and
    `Bottleneck`; `_make_layer` follows `torchvision/models/resnet.py`."""

    def __init__(self, block, stem, widths, depths):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = stem
        self.layer1 = self._make_layer(block, widths[0], depths[0], 1)
        self.layer2 = self._make_layer(block, widths[1], depths[1], 2)
        self.layer3 = self._make_layer(block, widths[2], depths[2], 2)
        self.layer4 = self._make_layer(block, widths[3], depths[3], 2)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in [self.layer1, self.layer2, self.layer3, self.layer4]:
            x = layer(x)
            outs.append(x)
        return outs


def known_value(key, t, shape):
    n = math.prod(shape)
    i = torch.arange(n, dtype=torch.int64)
    h = (i * 2654435761 + t * 40503 + 12345) % (2**32)
    s = h.to(torch.float64) / 2.0**31 - 1.0
    if key.endswith("num_batches_tracked"):
        return torch.tensor(t, dtype=torch.int64)
    if len(shape) == 4:
        v = s * math.sqrt(3.0 / (shape[1] * shape[2] * shape[3]))
    elif key.endswith("running_var"):
        v = 0.75 + 0.25 * s
    elif key.endswith("running_mean") or key.endswith("bias"):
        v = 0.1 * s
    elif key.endswith("weight"):
        v = 1.0 + 0.2 * s
    else:
        raise ValueError(f"no known-value rule for {key}")
    return v.reshape(shape).to(torch.float32)


def fixed_input():
    n = math.prod(INPUT_SHAPE)
    i = torch.arange(n, dtype=torch.float64)
    return torch.sin(0.05 * i + 0.2).reshape(INPUT_SHAPE).to(torch.float32)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for name, (block, stem, widths, depths) in ARCHS.items():
        model = TinyResNet(block, stem, widths, depths).eval()
        keys = sorted(model.state_dict().keys())
        sd = {
            k: known_value(k, t, list(model.state_dict()[k].shape))
            for t, k in enumerate(keys)
        }
        model.load_state_dict(sd)
        with torch.no_grad():
            outs = model(fixed_input())
        base = os.path.join(out_dir, name)
        torch.save(sd, base + ".pth")
        # PyTorch <= 1.5's format (a pickle stream, not a zip archive).
        torch.save(sd, base + "_legacy.pth", _use_new_zipfile_serialization=False)
        # Training checkpoints nest the weights (mmdet: `state_dict`, detectron2: `model`).
        nest = "state_dict" if block is BasicBlock else "model"
        torch.save({nest: sd, "meta": {"epoch": 12}}, base + f"_nested_{nest}.pth")
        save_file(sd, base + ".safetensors")
        ref = {
            "generator": "scripts/weights/known_values.py",
            "torch": torch.__version__,
            "block": "basic" if block is BasicBlock else "bottleneck",
            "stem_channels": stem,
            "widths": widths,
            "depths": depths,
            "input_shape": INPUT_SHAPE,
            "keys": [[k, list(sd[k].shape)] for k in keys],
            "stages": [
                {"shape": list(o.shape), "values": [float(v) for v in o.flatten()]}
                for o in outs
            ],
        }
        with open(base + ".json", "w") as f:
            json.dump(ref, f)
            f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
