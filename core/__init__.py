"""cliplit.core: what every stage shares and that needs no torch.

The ONNX I/O contract, the weights registry and resolver, the engine sidecar, TensorRT profile shapes, image I/O,
atomic outputs, user-facing errors, metrics and the version. It imports nothing else of cliplit, so ``train``,
``export``, ``runtime`` and ``benchmarks`` can all build on it without depending on each other.
"""
