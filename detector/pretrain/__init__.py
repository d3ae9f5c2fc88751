"""Backbone pre-training: MobileNetV2 as an image classifier, trained, exported and run.

The Lightning parts (``detector.pretrain.module``, ``.data``, ``.cli``) are imported on use, so
``is_classifier_checkpoint`` stays cheap for tools that only dispatch on it.
"""
from detector.pretrain.export import export_classifier_executorch, export_classifier_onnx, quantize_classifier_onnx
from detector.pretrain.model import MobileNetV2Classifier, is_classifier_checkpoint, load_classifier
from detector.pretrain.predict import ClassifierPredictor, predict_images

__all__ = [
    "ClassifierPredictor",
    "MobileNetV2Classifier",
    "export_classifier_executorch",
    "export_classifier_onnx",
    "is_classifier_checkpoint",
    "load_classifier",
    "predict_images",
    "quantize_classifier_onnx",
]
