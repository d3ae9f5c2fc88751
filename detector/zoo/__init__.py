"""Published detectors and ImageNet classifiers loaded exactly into this package (``zoo:NAME`` wherever a
checkpoint or ``pretrained_backbone`` goes)."""
from detector.zoo.registry import (
    ZOO_PREFIX,
    ZooClassifier,
    ZooModel,
    fetch,
    get_zoo_model,
    is_zoo_classifier,
    is_zoo_name,
    zoo_checkpoint,
    zoo_classifier_checkpoint,
    zoo_classifiers,
    zoo_models,
)

__all__ = [
    "ZOO_PREFIX",
    "ZooClassifier",
    "ZooModel",
    "fetch",
    "get_zoo_model",
    "is_zoo_classifier",
    "is_zoo_name",
    "zoo_checkpoint",
    "zoo_classifier_checkpoint",
    "zoo_classifiers",
    "zoo_models",
]
