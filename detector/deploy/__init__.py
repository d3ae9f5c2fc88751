"""Deployment: what runs a model outside training.

- ``metadata.py``: ONNX metadata (label map, input size, normalisation, recipe), written and read here only;
- ``preprocess.py``: the network input (any image -> resized, normalised batch), for every runtime;
- ``onnx_export.py``: the one ONNX export (``export_graph``) and the detector's graphs (raw, with NMS);
- ``onnx_runtime.py``: the ONNX Runtime runner (the runner contract of :mod:`detector.inference`);
- ``openvino_runtime.py``: the same runner on OpenVINO (Intel's CPU runtime), from the same files;
- ``quantize.py``: static int8 (QDQ) quantization of an export;
- ``executorch_export.py``: the ExecuTorch program (``.pte``, XNNPACK, fp32 or PT2E int8) and its JSON sidecar;
- ``executorch_runtime.py``: the runner of a ``.pte`` on ExecuTorch's Python runtime.

Imports modeling (and the leaf modules), never inference, training or evaluation.
"""
