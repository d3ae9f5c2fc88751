"""detector: SSDLite on MobileNetV2 -- train, evaluate, export and run a small, fast object detector."""
from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.inference import Predictor
from detector.labels import LabelMap
from detector.modeling.ssdlite import PRESETS, SSDLite, build_model
from detector.zoo import registry as _zoo_registry  # noqa: F401  (registers zoo:NAME as backbone weights)

__all__ = ["PRESETS", "LabelMap", "Predictor", "SSDLite", "build_model", "load_checkpoint", "save_checkpoint"]
__version__ = "0.1.0"
