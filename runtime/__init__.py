"""cliplit.runtime: the lean runtime (no torch): the ONNX I/O contract, the weights resolver, backends, and
``cliplit enhance`` for images, video files, cameras and streams. Start with ``cliplit.runtime.enhancer.Enhancer``.
"""
