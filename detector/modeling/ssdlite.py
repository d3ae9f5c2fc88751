"""SSDLite: the detector module and its builder (the recipe)."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from detector.constants import IMAGENET_MEAN, IMAGENET_STD, RESIZES
from detector.modeling.anchors import DefaultBoxGenerator
from detector.modeling.atss import ATSSMatcher
from detector.modeling.backbone import BN_EPS, build_backbone, load_backbone_weights
from detector.modeling.boxes import BoxCoder
from detector.modeling.heads import SSDLiteHead
from detector.modeling.loss import MultiBoxLoss
from detector.modeling.matching import SSDMatcher
from detector.modeling.neck import EXTRA_CHANNELS, build_neck
from detector.modeling.padding import use_tf_same_padding
from detector.modeling.postprocess import PostProcessor

# The recipe of each named model; build_model's keyword arguments override any entry.
PRESETS: dict[str, dict[str, Any]] = {
    "ssdlite_mobilenetv2": {"neck": "ssdlite", "image_size": 320},
    "ssdlite_fpn_mobilenetv2": {"neck": "fpn", "image_size": 320},
    # torchvision's ssdlite320_mobilenet_v3_large (detector.zoo: its COCO weights load into it exactly).
    "ssdlite320_mobilenet_v3_large": {
        "backbone": "mobilenet_v3_large",
        "reduced_tail": True,  # torchvision builds its COCO model without ImageNet weights, so reduced
        "neck": "ssdlite",
        "image_size": 320,
        "bn_eps": 0.001,
        "min_scale": 0.2,
        "max_scale": 0.95,
        "reduce_boxes_in_lowest_layer": False,
        "anchor_order": "torchvision",
        "clip_anchors": True,
        "score_threshold": 0.001,
        "nms_threshold": 0.55,
        "topk_candidates": 300,
        "max_detections": 300,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    },
    # mmdetection's ssdlite_mobilenetv2-scratch_8xb24-600e_coco (detector.zoo, likewise).
    "ssdlite_mobilenetv2_mmdet": {
        "backbone_taps": "blocks",  # its out_indices=(4, 7): block outputs, 96 and 1280 channels
        "neck": "ssdlite",
        "image_size": 320,
        "bn_eps": 0.001,
        "reduce_boxes_in_lowest_layer": False,
        "anchor_order": "torchvision",  # (s, 1), (s', 1), (s, 2), (s, 1/2), ...: mmdetection's order too
        "anchor_scales": [size / 320 for size in (48, 100, 150, 202, 253, 304, 320)],  # min_sizes, last max
        "anchor_steps": [16, 32, 64, 107, 160, 320],
        "score_threshold": 0.02,
        "nms_threshold": 0.45,
        "topk_candidates": 1000,  # its nms_pre, per level
        "topk_per": "level",
        "min_box_size": 0.0,
        "max_detections": 200,
    },
    # The TF Object Detection API's ssdlite_mobilenet_v2 (TF's model zoo ssdlite_mobilenet_v2_coco and its
    # fine-tuned descendants; detector.zoo.tf_ssdlite converts their frozen graphs into it exactly).
    "ssdlite_mobilenet_v2_tf": {
        "neck": "ssdlite",
        "image_size": 300,
        "bn_eps": 0.001,
        "padding": "tf_same",  # TF's SAME: strided convs pad 0 before, 1 after on even sides
        "resize": "tf_bilinear",  # its graph resizes the float image with TF1's bilinear (no half-pixel offset)
        "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],  # its pipeline.config writes 1/3 as 0.3333
        "classification": "focal",  # sigmoid scores, the background logit ignored
        "score_threshold": 1e-8,
        "nms_threshold": 0.6,
        "topk_candidates": 100_000,  # TF caps nothing before NMS: every anchor is a candidate
        "max_detections": 100,  # max_total_detections (and 100 per class, which cannot bind before it)
        "clip_before_nms": False,  # its NMS compares unclipped boxes; ClipToWindow comes after
        "min_box_size": 0.0,  # and drops the boxes it leaves with no area
        "mean": [0.5, 0.5, 0.5],  # (2 / 255) * x - 1
        "std": [0.5, 0.5, 0.5],
    },
}

DEFAULTS: dict[str, Any] = {
    "num_classes": 91,  # background included: COCO's 90 category ids + background
    "backbone": "mobilenet_v2",  # or "mobilenet_v3_large" (torchvision's SSDLite)
    "reduced_tail": False,  # MobileNetV3's halved last stage
    "backbone_taps": "expansion",  # MobileNetV2: "expansion" (TF) or "blocks" (mmdetection)
    "stride8_level": False,  # MobileNetV2: a seventh, first level at stride 8 (C3), for small objects
    "width_mult": 1.0,
    "neck": "ssdlite",
    "image_size": 320,
    "pretrained_backbone": "none",
    "bn_eps": BN_EPS,
    "padding": "symmetric",  # or "tf_same": TF's asymmetric SAME padding of strided convs (TF-trained weights)
    "resize": "opencv",  # input resize at inference: cv2 INTER_LINEAR on uint8, or "tf_bilinear" (TF1's, float)
    "min_scale": 0.2,
    "max_scale": 0.95,
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0],
    "reduce_boxes_in_lowest_layer": True,
    "anchor_order": "tf",  # or "torchvision": the same boxes in torchvision's order
    "clip_anchors": False,  # torchvision clips default box sizes to the image
    "anchor_scales": None,  # explicit per-level scales (num_levels + 1), as mmdetection's min/max sizes
    "anchor_steps": None,  # anchor centres on a grid of these pixel strides (mmdetection)
    # Training recipe. Later options (issue #22) default to SSD's own, so configs without them
    # (older checkpoints, ONNX metadata) build the same model and loss.
    "classification": "softmax",  # or sigmoid scores: "focal", "varifocal", "quality_focal"
    "iou_threshold": 0.5,  # the "iou" assigner's
    "assigner": "iou",  # or "atss" (adaptive per-box IoU threshold over per-level candidates)
    "atss_topk": 9,  # ATSS candidates per level per box
    "box_loss": "smooth_l1",  # or "giou", "ciou", "smooth_l1+giou"
    "box_loss_weight": 2.0,  # the IoU term's weight (mmdetection's ATSS and GFL weigh GIoU 2.0)
    "neg_pos_ratio": 3.0,
    "score_threshold": 0.01,
    "nms_threshold": 0.55,
    "topk_candidates": 300,
    "max_detections": 100,
    "topk_per": "class",  # top-k candidates per class (torchvision) or per level ("level", mmdetection)
    "min_box_size": None,  # drop boxes no larger than this (pixels, after clipping), as mmdetection
    "clip_before_nms": True,  # False: NMS on the unclipped boxes, clipped after (TF's Object Detection API)
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    # How the model wants a frame of a given shape seen (detector.slicing.FrameView.to_config: slicing
    # of wide frames, letterbox); None: whole frames, stretched. Inference only: the network ignores it.
    "view": None,
}

# SSD's box coding weights (wx, wy, ww, wh): fixed by the recipe, not an option.
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
SIGMOID_PRIOR = 0.01  # initial foreground score of sigmoid-scored models (RetinaNet's prior probability)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    height, width = size
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"image_size must be a positive side or [height, width] in pixels, got {size}")
    return (int(height), int(width))


class SSDLite(nn.Module):
    """SSDLite detector: backbone -> neck -> heads, with anchors, loss and post-processing around it.

    ``forward`` is the network core (normalised images in, raw outputs out) and traces to ONNX;
    ``compute_loss`` and ``predict`` wrap it for training and inference, so the output type of
    ``forward`` never depends on the mode.

    Args:
        backbone: returns a list of feature maps.
        neck: turns them into the pyramid the heads read.
        num_classes: classes predicted, background (label 0) included.
        anchor_generator: default boxes; its counts size the heads.
        image_size: ``(H, W)`` of the network input, fixed (SSD resizes every image to it).
        criterion: training loss; post_processor: inference decoding and NMS.
        mean, std: RGB normalisation (0..1 scale) the network expects.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module,
        num_classes: int,
        anchor_generator: DefaultBoxGenerator,
        image_size: tuple[int, int],
        criterion: MultiBoxLoss,
        post_processor: PostProcessor,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.image_size = _pair(image_size)
        self.num_classes = num_classes
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.anchor_generator = anchor_generator
        self.criterion = criterion
        self.post_processor = post_processor
        self.config = dict(config or {})

        # Shapes are computed: channel counts and map sizes from a dummy pass, anchor counts from
        # the generator; the heads are built from both and the totals must agree.
        was_training = self.training
        self.eval()
        with torch.no_grad():
            maps = self.neck(self.backbone(torch.zeros(1, 3, *self.image_size)))
        in_channels = [m.shape[1] for m in maps]
        self.feature_sizes = [tuple(m.shape[-2:]) for m in maps]
        # Sigmoid-scored models start every score at RetinaNet's prior (see SSDLiteHead).
        class_prior = SIGMOID_PRIOR if post_processor.classification == "focal" else None
        self.head = SSDLiteHead(in_channels, anchor_generator.num_anchors_per_location(), num_classes, class_prior)
        self.register_buffer("anchors", anchor_generator(self.feature_sizes, self.image_size), persistent=False)
        self.register_buffer("anchor_levels", anchor_generator.levels(self.feature_sizes), persistent=False)
        with torch.no_grad():
            cls_logits, _ = self.head.eval()(maps)
        self.train(was_training)
        if cls_logits.shape[1] != self.anchors.shape[0]:
            raise AssertionError(f"heads predict {cls_logits.shape[1]} boxes but there are {self.anchors.shape[0]} anchors")

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``images`` ``[B, 3, H, W]`` normalised -> ``cls_logits [B, A, C]``, ``bbox_regression [B, A, 4]``."""
        return self.head(self.neck(self.backbone(images)))

    def compute_loss(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training loss. ``targets``: per image ``boxes [N, 4]`` xyxy input pixels, ``labels [N]``."""
        cls_logits, bbox_regression = self(images)
        return self.criterion(cls_logits, bbox_regression, self.anchors, targets,
                              anchor_levels=self.anchor_levels)

    def postprocess(
        self, cls_logits: Tensor, bbox_regression: Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[dict[str, Tensor]]:
        """Detections from raw outputs; boxes in ``image_sizes`` pixels (input pixels if ``None``)."""
        return self.post_processor(cls_logits, bbox_regression, self.anchors, self.image_size, image_sizes,
                                   anchor_levels=self.anchor_levels)

    @torch.no_grad()
    def predict(self, images: Tensor, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Tensor]]:
        """``images`` ``[B, 3, H, W]`` normalised -> per image ``boxes [N, 4]`` xyxy (original pixels
        given ``image_sizes`` as ``(h, w)``), ``scores [N]``, ``labels [N]`` in 1..C-1.

        Call ``model.eval()`` first, as for any torchvision model: in training mode BatchNorm uses
        (and updates) batch statistics. :class:`detector.Predictor` does this for you."""
        cls_logits, bbox_regression = self(images)
        return self.postprocess(cls_logits, bbox_regression, image_sizes)


def resolve_config(preset: str | dict[str, Any] = "ssdlite_mobilenetv2", **overrides: Any) -> dict[str, Any]:
    """The full recipe: defaults, then the preset (a name or a dict), then ``overrides``."""
    config = copy.deepcopy(DEFAULTS)
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        config["preset"] = preset
        config.update(PRESETS[preset])
    else:
        config.update(preset)
    unknown = set(overrides) - set(DEFAULTS) - {"preset"}
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    config["image_size"] = list(_pair(config["image_size"]))
    return config


def num_levels(config: dict[str, Any]) -> int:
    """Feature levels of a recipe, known before any network is built (the ONNX runner has only the
    config): the backbone's taps (C4, C5, and C3 with ``stride8_level``), then one per extra block."""
    return (3 if config["stride8_level"] else 2) + len(EXTRA_CHANNELS)


def build_anchor_generator(config: dict[str, Any]) -> DefaultBoxGenerator:
    """The default boxes of a recipe (a ``model.config``; missing keys take ``DEFAULTS``).

    The one place that turns anchor options into a generator: ``build_model`` and the ONNX runner
    (which has the config but no network) both call it, so an anchor option cannot be missed by one.
    """
    config = resolve_config(config)
    return DefaultBoxGenerator(
        num_levels=num_levels(config),
        min_scale=config["min_scale"],
        max_scale=config["max_scale"],
        aspect_ratios=config["aspect_ratios"],
        reduce_boxes_in_lowest_layer=config["reduce_boxes_in_lowest_layer"],
        order=config["anchor_order"],
        clip=config["clip_anchors"],
        scales=config["anchor_scales"],
        steps=config["anchor_steps"],
    )


def build_matcher(config: dict[str, Any]) -> SSDMatcher | ATSSMatcher:
    """The anchor assigner of a recipe: ``assigner`` ``"iou"`` (SSD's, at ``iou_threshold``) or
    ``"atss"`` (``atss_topk`` candidates per level)."""
    if config["assigner"] == "iou":
        return SSDMatcher(config["iou_threshold"])
    if config["assigner"] == "atss":
        return ATSSMatcher(topk=config["atss_topk"])
    raise ValueError(f"assigner must be 'iou' or 'atss', got {config['assigner']!r}")


def build_post_processor(config: dict[str, Any]) -> PostProcessor:
    """The decoding and NMS of a recipe (a ``model.config``; missing keys take ``DEFAULTS``)."""
    config = resolve_config(config)
    return PostProcessor(
        BoxCoder(BOX_CODER_WEIGHTS),
        score_threshold=config["score_threshold"],
        nms_threshold=config["nms_threshold"],
        topk_candidates=config["topk_candidates"],
        max_detections=config["max_detections"],
        classification=config["classification"],
        topk_per=config["topk_per"],
        min_box_size=config["min_box_size"],
        clip_before_nms=config["clip_before_nms"],
    )


def build_model(preset: str | dict[str, Any] = "ssdlite_mobilenetv2", **overrides: Any) -> SSDLite:
    """Build an SSDLite-MobileNetV2 detector.

    Args:
        preset: a name from ``PRESETS`` (``"ssdlite_mobilenetv2"``, ``"ssdlite_fpn_mobilenetv2"``) or a
            config dict (as saved in ``model.config``).
        **overrides: any key of ``DEFAULTS``, e.g. ``num_classes`` (background included),
            ``width_mult``, ``neck`` (``"ssdlite"`` | ``"fpn"``), ``image_size``, ``stride8_level``
            (a first level at stride 8, MobileNetV2's C3, for small objects),
            ``pretrained_backbone`` (``"none"`` | ``"imagenet"`` | path to a state dict), ``padding``
            (``"symmetric"`` | ``"tf_same"``), ``resize`` (``"opencv"`` | ``"tf_bilinear"``); the
            training recipe: ``classification`` (``"softmax"`` | ``"focal"`` | ``"varifocal"`` |
            ``"quality_focal"``), ``assigner`` (``"iou"`` at ``iou_threshold`` | ``"atss"`` with
            ``atss_topk``), ``box_loss`` (``"smooth_l1"`` | ``"giou"`` | ``"ciou"`` |
            ``"smooth_l1+giou"``, the IoU term weighted ``box_loss_weight``); see
            :class:`detector.modeling.loss.MultiBoxLoss`.

    Example::

        model = build_model("ssdlite_mobilenetv2", num_classes=91, width_mult=1.0, image_size=300)
    """
    config = resolve_config(preset, **overrides)
    backbone = build_backbone(config["backbone"], width_mult=config["width_mult"], bn_eps=config["bn_eps"],
                              reduced_tail=config["reduced_tail"], taps=config["backbone_taps"],
                              stride8=config["stride8_level"])
    if config["pretrained_backbone"] not in (None, "", "none"):
        load_backbone_weights(backbone, str(config["pretrained_backbone"]), padding=config["padding"])
    with torch.no_grad():
        backbone_channels = [f.shape[1] for f in backbone.eval()(torch.zeros(1, 3, 64, 64))]
    backbone.train()
    neck = build_neck(config["neck"], backbone_channels, config["width_mult"])
    if config["padding"] == "tf_same":
        use_tf_same_padding(backbone)
        use_tf_same_padding(neck)
    elif config["padding"] != "symmetric":
        raise ValueError(f"padding must be 'symmetric' or 'tf_same', got {config['padding']!r}")
    if config["resize"] not in RESIZES:
        raise ValueError(f"resize must be one of {RESIZES}, got {config['resize']!r}")
    anchor_generator = build_anchor_generator(config)
    box_coder = BoxCoder(BOX_CODER_WEIGHTS)
    criterion = MultiBoxLoss(
        box_coder,
        build_matcher(config),
        classification=config["classification"],
        neg_pos_ratio=config["neg_pos_ratio"],
        box_loss=config["box_loss"],
        box_loss_weight=config["box_loss_weight"],
    )
    post_processor = build_post_processor(config)
    return SSDLite(
        backbone=backbone,
        neck=neck,
        num_classes=config["num_classes"],
        anchor_generator=anchor_generator,
        image_size=tuple(config["image_size"]),
        criterion=criterion,
        post_processor=post_processor,
        mean=config["mean"],
        std=config["std"],
        config=config,
    )
