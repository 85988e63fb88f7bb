"""Empty stand-ins for the modules mmdetection 3.3.0 imports but never uses while building
a detector and running its forward pass (`mmdet.models` imports them at module level):
OpenCV, matplotlib, pycocotools, shapely, scipy and mmcv's compiled ops. Importing this
module first lets `mmdet_detector_keys.py` and `mmdet_forward.py` run with mmengine,
mmcv-lite (no compiled ops) and mmdet installed with `--no-deps`. A stand-in's
attributes are empty classes: building the dense detectors and their forward pass
(ResNet, FPN, the GFL / ATSS / RetinaNet / FCOS heads: plain torch ops) never calls one.
"""

import importlib.abc
import importlib.machinery
import sys
import types

STUBBED = ("cv2", "matplotlib", "pycocotools", "shapely", "scipy", "mmcv.ops", "mmcv._ext")


class _Anything(types.ModuleType):
    """A module whose every attribute is a do-nothing class."""

    __path__ = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (object,), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, cls)
        return cls


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if any(name == s or name.startswith(s + ".") for s in STUBBED):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Anything(spec.name)
        module.__version__ = "0.0"
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubFinder())
