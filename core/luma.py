"""The brightness measures cliplit computes, each named for what it is: they are different quantities, not one.

* **BT.601 luma** (:data:`BT601_LUMA_RGB`): Y' = 0.299 R' + 0.587 G' + 0.114 B', in the input's own range. The guided
  light-map upsampler's guide image (``cliplit.runtime.upsample.bt601_luma``).
* **BT.601 studio-swing Y** (the same weights times :data:`STUDIO_SWING`): the Y of 8-bit YCbCr, which spans 219 of
  the 255 codes, without its 16/255 offset. Training's warm-up PSNR uses it (``cliplit.train.enhancer_stages``), as
  the official code's pyiqa ``rgb2ycbcr`` does, so its numbers compare with the paper's.
* **Channel mean**: (R + G + B) / 3, what the distilled student's light map follows at full resolution
  (``cliplit.train.student.channel_mean``). It is part of a shipped model's formula, so it stays as it is.
"""

from __future__ import annotations

#: ITU-R BT.601 luma weights of R', G' and B' (they sum to 1)
BT601_LUMA_RGB: tuple[float, float, float] = (0.299, 0.587, 0.114)
#: the share of the 8-bit code range that studio-swing (limited-range) Y spans: 16 to 235
STUDIO_SWING = 219 / 255
