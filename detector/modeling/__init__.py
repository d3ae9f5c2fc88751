"""The network and its math, pure torch: backbone -> neck -> heads, anchors, box coding, matching,
loss and post-processing, wired together by :mod:`detector.modeling.ssdlite`."""
from detector.modeling.ssdlite import DEFAULTS, PRESETS, SSDLite, build_model, resolve_config

__all__ = ["DEFAULTS", "PRESETS", "SSDLite", "build_model", "resolve_config"]
