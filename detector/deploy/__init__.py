"""Deployment: what runs a model outside training.

- ``metadata.py``: ONNX metadata (label map, input size, normalisation, recipe), written and read here only;
- ``preprocess.py``: the network input (any image -> resized, normalised batch), for every runtime;
- ``onnx_export.py``: the one ONNX export (``export_graph``) and the detector's graphs (raw, with NMS);
- ``onnx_runtime.py``: the ONNX Runtime runner (the runner contract of :mod:`detector.inference`);
- ``quantize.py``: static int8 (QDQ) quantization of an export.

Imports modeling (and the leaf modules), never inference, training or evaluation.
"""
