"""cliplit.train: the CLIP-LIT network, its checkpoints, and CLIP-LIT's iterative prompt learning on open_clip.

Needs the ``train`` extra (torch, open_clip_torch) except for ``network`` and ``checkpoint`` (torch only).
"""
