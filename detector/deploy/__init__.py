"""Deployment: ONNX export and its metadata, ONNX Runtime, int8 quantization."""
