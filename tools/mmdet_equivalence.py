"""Check the mmdetection SSDLite conversion against mmdetection's own model code.

mmdetection is not a dependency of this project. Install it beside the project (checked with
mmdet 3.3.0, mmengine 0.10.7, mmcv-lite 2.1.0 and six; mmdet 3.3 refuses mmcv 2.2):

    pip install --target /tmp/mmsite --no-deps mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 six \
        addict yapf termcolor rich shapely terminaltables platformdirs markdown-it-py mdurl tomli
    PYTHONPATH=/tmp/mmsite python tools/mmdet_equivalence.py --images DIR_OF_PHOTOS

mmcv-lite lacks mmcv's compiled ops. An import hook stands in for ``mmcv.ops``: every name resolves
to an inert class (model building only needs them to exist), except ``batched_nms``, which runs
``torchvision.ops.batched_nms`` (the same greedy per-class NMS as mmcv's). Both models get random
weights and BatchNorm statistics; the script compares raw outputs (with the background column
moved), anchors, and final detections on the images given, and prints one JSON line.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import torch
from torch import nn
from torchvision.ops import batched_nms as tv_batched_nms


class _MmcvOpsStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []

        def batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):  # mmcv's signature
            keep = tv_batched_nms(boxes, scores, idxs, float(nms_cfg["iou_threshold"]))
            return torch.cat((boxes[keep], scores[keep, None]), dim=1), keep

        def __getattr__(attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (), {"__init__": lambda self, *a, **k: None})

        module.batched_nms = batched_nms
        module.__getattr__ = __getattr__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def build_mmdet() -> nn.Module:
    sys.meta_path.insert(0, _MmcvOpsStandIn())
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import mmdet

    register_all_modules()
    config = Path(mmdet.__file__).parent / ".mim" / "configs" / "ssd" / "ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py"
    model = MODELS.build(Config.fromfile(str(config)).model).eval()
    # mmdet 3.3's shared post-processing reads ``self.loss_cls``, which SSDHead (it computes its loss
    # by hand) never sets: a known 3.3 bug. An empty stand-in takes the plain softmax branch.
    model.bbox_head.loss_cls = types.SimpleNamespace(custom_cls_channels=False)
    return model


def mmdet_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """Raw outputs flattened as ours (background column first) and mmdetection's own detections."""
    with torch.no_grad():
        cls, box = model.bbox_head(model.extract_feat(x))
        metas = [{"img_shape": tuple(x.shape[-2:]), "ori_shape": tuple(x.shape[-2:]), "scale_factor": (1.0, 1.0)}] * len(x)
        results = model.bbox_head.predict_by_feat(cls, box, batch_img_metas=metas, rescale=False)
    batch, classes = x.shape[0], model.bbox_head.cls_out_channels
    logits = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1, classes) for c in cls], 1)
    logits = torch.cat((logits[..., -1:], logits[..., :-1]), -1)
    codes = torch.cat([b.permute(0, 2, 3, 1).reshape(batch, -1, 4) for b in box], 1)
    return logits, codes, results


def compare(images: Sequence[Path], seed: int) -> dict[str, Any]:
    from detector.data.io import load_image
    from detector.modeling.ssdlite import build_model, resolve_config
    from detector.zoo.equivalence import randomise
    from detector.zoo.mmdet_ssdlite import CONFIG, convert_state_dict

    reference = build_mmdet()
    randomise(reference, seed)
    ours = build_model(CONFIG).eval()
    ours.load_state_dict(convert_state_dict(reference.state_dict()), strict=True)
    mean, std = torch.tensor(resolve_config(CONFIG)["mean"]).view(3, 1, 1), torch.tensor(resolve_config(CONFIG)["std"]).view(3, 1, 1)
    frames = [cv2.resize(load_image(p), (320, 320), interpolation=cv2.INTER_LINEAR) for p in images]
    x = torch.stack([(torch.from_numpy(f).permute(2, 0, 1).float() / 255 - mean) / std for f in frames])
    logits, codes, expected = mmdet_outputs(reference, x)
    with torch.no_grad():
        cls_logits, bbox_regression = ours(x)
    detections = ours.predict(x)
    priors = torch.cat(reference.bbox_head.prior_generator.grid_priors(ours.feature_sizes, device="cpu"))
    per_image = []
    for theirs, mine in zip(expected, detections):
        same_count = len(theirs.bboxes) == len(mine["boxes"])
        per_image.append({
            "detections": [len(theirs.bboxes), len(mine["boxes"])],
            "labels_equal": same_count and torch.equal(theirs.labels + 1, mine["labels"]),
            "max_box_diff": float((theirs.bboxes - mine["boxes"]).abs().max()) if same_count else None,
            "max_score_diff": float((theirs.scores - mine["scores"]).abs().max()) if same_count else None,
        })
    return {
        "images": [str(p) for p in images],
        "params": [sum(p.numel() for p in reference.parameters()), sum(p.numel() for p in ours.parameters())],
        "max_cls_logit_diff": float((cls_logits - logits).abs().max()),
        "max_box_code_diff": float((bbox_regression - codes).abs().max()),
        "max_anchor_diff_px": float((ours.anchors - priors).abs().max()),
        "per_image": per_image,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="a folder of photos")
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from detector.data.io import list_images

    try:
        import mmdet  # noqa: F401
    except ImportError:
        parser.error("mmdet is not importable: install it as this script's docstring says and put it on PYTHONPATH")
    result = compare(list_images(args.images)[: args.count], args.seed)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
