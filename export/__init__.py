"""cliplit.export: checkpoint → verified dynamic-shape ONNX (both I/O variants) → FP16 TensorRT engine + sidecar.

Needs the ``export`` extra (torch, onnx); building engines also needs the ``tensorrt`` extra and an NVIDIA GPU.
"""
