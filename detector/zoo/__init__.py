"""Published COCO detectors loaded exactly into this package (``zoo:NAME`` wherever a checkpoint goes)."""
from detector.zoo.registry import ZOO_PREFIX, ZooModel, fetch, get_zoo_model, is_zoo_name, zoo_checkpoint, zoo_models

__all__ = ["ZOO_PREFIX", "ZooModel", "fetch", "get_zoo_model", "is_zoo_name", "zoo_checkpoint", "zoo_models"]
