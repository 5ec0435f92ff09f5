"""A video's colour tags (:class:`VideoColour`) and the one YUV ↔ BGR conversion every cliplit video path uses.

FFmpeg's swscale (through PyAV) converts between the codec's YUV and the network's BGR in both directions, by the
matrix and range the stream is tagged with. Two converters disagree: GStreamer's ``videoconvert`` and swscale differ
by up to several levels per pixel on sharp limited-range BT.709 footage and by far more on full-range (JPEG-style)
clips, and the enhancement amplifies that in the shadows (33 dB and 26 dB between the two pipelines' outputs, where
the same conversion gives 38+). So the file reader and writer (:mod:`cliplit.runtime.video_read`,
:mod:`cliplit.runtime.video_write`) and the GStreamer element (:mod:`cliplit.runtime.gst_element`) all call
:func:`frame_to_bgr` and :func:`bgr_to_frame` here: the same YUV gives the same pixels wherever it is enhanced.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

#: FFmpeg's number for a colour tag (primaries, transfer, matrix) the file leaves unspecified
UNSPECIFIED = 2
#: tag values that say nothing (reserved or unspecified)
RESERVED = (0, UNSPECIFIED, 3)
BT709 = 1
LIMITED, FULL = 1, 2  # AVColorRange
#: the HDR transfer functions (FFmpeg's AVColorTransferCharacteristic numbers) by their common names
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}
_PRIMARIES_NAMES = {1: "BT.709", 9: "BT.2020", 11: "DCI-P3", 12: "Display P3"}
#: frame side data that tells HDR displays how to show a clip; the output does not carry it (PyAV cannot attach it)
_HDR_SIDE_DATA = {
    "MASTERING_DISPLAY_METADATA": "mastering-display metadata",
    "CONTENT_LIGHT_LEVEL": "content light levels",
    "DYNAMIC_HDR_PLUS": "HDR10+ metadata",
    "DYNAMIC_HDR_VIVID": "HDR Vivid metadata",
    "DOVI_METADATA": "Dolby Vision metadata",
    "DOVI_RPU_BUFFER": "Dolby Vision metadata",
}
#: the output's matrix for each input matrix (AVColorSpace) the writer converts by; BT.2020 constant luminance
#: becomes its non-constant-luminance form (what swscale computes); any other matrix (none, RGB, YCgCo): BT.709
_OUTPUT_MATRIX = {1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}
#: swscale's coefficient set (SWS_CS_*, which PyAV's reformat takes) for each of those output matrices
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9}


@dataclass(frozen=True)
class VideoColour:
    """How a video's pixel values are meant to be shown, as FFmpeg numbers them: colour primaries, transfer function
    (``color_trc``) and YUV matrix (``colorspace``), 2 where unspecified; range (0 unspecified, 1 limited, 2 full);
    and bits per component.

    The network changes brightness, not the encoding of colour: its output frames are in the input's primaries and
    transfer function, so the writer tags the output as the input was tagged (an HLG clip stays HLG)."""

    color_primaries: int = UNSPECIFIED
    color_trc: int = UNSPECIFIED
    colorspace: int = UNSPECIFIED
    color_range: int = 0
    bits: int = 8
    #: the input's HDR side data (mastering display, HDR10+, Dolby Vision), none of which the output carries
    side_data: tuple[str, ...] = ()

    @classmethod
    def of_frame(cls, frame: av.VideoFrame) -> VideoColour:
        """The colour of a decoded frame (the first stands for the clip: a stream does not change it midway)."""
        kinds = [getattr(kind, "name", str(kind)) for kind in frame.side_data]
        side_data = tuple(dict.fromkeys(_HDR_SIDE_DATA[kind] for kind in kinds if kind in _HDR_SIDE_DATA))
        yuv = not frame.format.is_rgb  # matrix and range describe YUV; an RGB input (a GIF) has neither
        return cls(
            color_primaries=int(frame.color_primaries),
            color_trc=int(frame.color_trc),
            colorspace=int(frame.colorspace) if yuv else UNSPECIFIED,
            color_range=int(frame.color_range) if yuv else 0,
            bits=max((component.bits for component in frame.format.components), default=8),
            side_data=side_data,
        )

    @property
    def hdr(self) -> str | None:
        """PQ or HLG for an HDR transfer function, else None."""
        return HDR_TRANSFERS.get(self.color_trc)

    def tags(self) -> str:
        """The specified primaries and transfer function in words ("BT.2020/HLG"), for messages."""
        names = []
        if self.color_primaries not in RESERVED:
            names.append(_PRIMARIES_NAMES.get(self.color_primaries, f"primaries {self.color_primaries}"))
        if self.color_trc not in RESERVED:
            names.append(self.hdr or f"transfer {self.color_trc}")
        return "/".join(names)

    def output_tags(self, *, rgb: bool) -> tuple[int, int, int | None, int]:
        """An enhanced copy's primaries, transfer function, matrix and range: this input's (the enhanced frames are
        still in its colour space), BT.709 and limited range where it does not say (and where swscale has no such
        matrix). An RGB output has no matrix (None) and takes only the tags its input has."""
        default = UNSPECIFIED if rgb else BT709
        primaries = self.color_primaries if self.color_primaries not in RESERVED else default
        transfer = self.color_trc if self.color_trc not in RESERVED else default
        if rgb:
            return primaries, transfer, None, 0
        color_range = FULL if self.color_range == FULL else LIMITED
        return primaries, transfer, _OUTPUT_MATRIX.get(self.colorspace, BT709), color_range


def frame_to_bgr(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as H×W×3 uint8 BGR, converted by the matrix and range it is tagged with (swscale reads the
    tags; full-range phone video must not be read as limited range)."""
    return frame.to_ndarray(format="bgr24", src_color_range=frame.color_range or None)


def bgr_to_frame(image: np.ndarray, pix_fmt: str, matrix: int | None, color_range: int) -> av.VideoFrame:
    """An H×W×3 uint8 BGR image as a ``pix_fmt`` frame: YUV converted by ``matrix`` (an output matrix of
    :meth:`VideoColour.output_tags`) and ``color_range`` and tagged with them; RGB (``matrix`` None) as it is."""
    frame = av.VideoFrame.from_ndarray(image, format="bgr24")
    if matrix is None:
        return frame
    frame = frame.reformat(format=pix_fmt, dst_colorspace=_SWS_MATRIX[matrix], dst_color_range=color_range)
    frame.colorspace, frame.color_range = matrix, color_range
    return frame
