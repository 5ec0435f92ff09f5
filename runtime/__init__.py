"""cliplit.runtime: the lean runtime (no torch): backends, the ``Enhancer`` API, and ``cliplit enhance`` for images,
video files, cameras and streams. Start with ``cliplit.runtime.enhancer.Enhancer``.
"""
