"""The output's encoder settings (codec, --crf, --preset, --pix-fmt), checked against the output container before
any work, and the one-line warning about what an output loses (bit depth, HDR side data)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import av

from cliplit.core.errors import CliplitError
from cliplit.runtime.video_colour import VideoColour

#: default video codec per output suffix (anything else: libx264)
CODEC_BY_SUFFIX = {".webm": "libvpx-vp9"}
#: codecs that store RGB losslessly, with the pixel format each takes
RGB_PIX_FMT = {"ffv1": "bgr0", "libx264rgb": "bgr24", "png": "rgb24"}
#: the quality scale (--crf) of the codecs that have one, lowest (best) to highest
CRF_RANGE = {"libx264": (0, 51), "libx264rgb": (0, 51), "libx265": (0, 51), "libvpx-vp9": (0, 63)}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: codecs that take --preset, with their presets
PRESETS = {"libx264": X26X_PRESETS, "libx264rgb": X26X_PRESETS, "libx265": X26X_PRESETS}
DEFAULT_CRF = 18
# veryfast, not x264's own medium: a third of medium's CPU for the same quality at CRF 18 (720p frames panning over
# real photos: 17.5 against 51.7 ms of CPU per frame, 1.34 against 1.47 MB, 39.50 against 39.61 dB), and that CPU is
# what real-time enhancement shares with the network; --preset medium (or slower) trades it back for smaller files.
DEFAULT_PRESET = "veryfast"


@dataclass(frozen=True)
class EncoderSettings:
    """The output's codec, quality, speed and pixel format, validated against the output container."""

    codec: str
    crf: int | None
    preset: str | None
    pix_fmt: str

    def coded_size(self, width: int, height: int) -> tuple[int, int]:
        """The size the codec stores: subsampled chroma (4:2:0, 4:2:2) needs multiples of the subsampling."""
        fmt = av.VideoFormat(self.pix_fmt)
        step_x, step_y = 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)
        return -(-width // step_x) * step_x, -(-height // step_y) * step_y


def encoder_settings(
    output: str | os.PathLike[str],
    codec: str | None = None,
    crf: int | None = None,
    preset: str | None = None,
    pix_fmt: str | None = None,
) -> EncoderSettings:
    """Check --codec, --crf, --preset and --pix-fmt for a video written to ``output`` before any work, with
    messages about the option at fault (ffmpeg's own would come only once the first frame is encoded)."""
    suffix = Path(output).suffix.lower()
    codec = codec or CODEC_BY_SUFFIX.get(suffix, "libx264")
    try:
        video_codec = av.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        raise CliplitError(f"--codec {codec}: no such video encoder in this FFmpeg build") from None
    if video_codec.type != "video":
        raise CliplitError(f"--codec {codec}: encodes {video_codec.type}, not video")
    if video_codec.name not in supported_codecs(suffix):
        raise CliplitError(f"--codec {codec}: a {suffix} file cannot hold it; choose another codec or suffix")
    if crf is not None and codec not in CRF_RANGE:
        raise CliplitError(f"--crf applies to {', '.join(CRF_RANGE)}, not to --codec {codec}")
    low, high = CRF_RANGE.get(codec, (0, 0))
    if crf is not None and not low <= crf <= high:
        raise CliplitError(f"--crf {crf}: {codec} takes {low} (best) to {high} (smallest file)")
    if preset is not None and preset not in PRESETS.get(codec, ()):
        if codec not in PRESETS:
            raise CliplitError(f"--preset applies to {', '.join(PRESETS)}, not to --codec {codec}")
        raise CliplitError(f"--preset {preset}: {codec} takes {', '.join(PRESETS[codec])}")
    formats = [fmt.name for fmt in video_codec.video_formats or ()]
    if pix_fmt is not None and formats and pix_fmt not in formats:
        raise CliplitError(f"--pix-fmt {pix_fmt}: {codec} takes {', '.join(formats)}")
    if pix_fmt is not None and not formats:
        try:
            av.VideoFormat(pix_fmt)
        except ValueError:
            raise CliplitError(f"--pix-fmt {pix_fmt}: no such pixel format") from None
    return EncoderSettings(
        codec=codec,
        crf=crf if crf is not None else (DEFAULT_CRF if codec in CRF_RANGE else None),
        preset=preset if preset is not None else (DEFAULT_PRESET if codec in PRESETS else None),
        pix_fmt=pix_fmt or RGB_PIX_FMT.get(codec, "yuv420p"),
    )


def precision_warning(colour: VideoColour, output: str | os.PathLike[str], settings: EncoderSettings) -> str | None:
    """One line on what an output made from a ``colour`` input loses, or None where it loses nothing.

    The network takes and gives 8-bit frames (:mod:`cliplit.runtime.enhancer`), so a 10-bit clip (phones record HDR as
    10-bit HLG or PQ) comes out with 8 bits of precision whatever the output format, and the HDR side data is not
    written; saying so keeps a banded HDR clip from being a surprise. The colour tags are kept (:class:`VideoWriter`),
    so the output is not mistaken for SDR."""
    output = Path(output)
    if colour.bits <= 8 and not colour.side_data:
        return None
    parts = []
    if colour.bits > 8:
        kind = f"{colour.bits}-bit {colour.hdr} video" if colour.hdr else f"{colour.bits}-bit video"
        stored_bits = max(component.bits for component in av.VideoFormat(settings.pix_fmt).components)
        if stored_bits > 8:
            stored = f"{output.name} ({settings.pix_fmt}) holds 8-bit precision (smooth gradients may band)"
        else:
            hint = _ten_bit_hint(output, settings)
            stored = f"{output.name} is 8-bit {settings.pix_fmt} (smooth gradients may band{hint})"
        parts.append(f"the input is {kind} and the network enhances 8-bit frames, so {stored}")
    else:
        parts.append(f"the input is {colour.hdr or 'HDR'} video")
    tags = colour.tags()
    if tags:
        parts.append(f"its {tags} colour tags are kept")
    if colour.side_data:
        parts.append(f"not carried into {output.name}: {', '.join(colour.side_data)}")
    return "; ".join(parts)


def _ten_bit_hint(output: Path, settings: EncoderSettings) -> str:
    """The options that write ``output`` as 10-bit YUV, or "" where this FFmpeg build cannot. Only YUV gains: an RGB
    output holds the network's 8 bits per channel exactly. HEVC Main 10 (libx265), what the phones that record
    10-bit play, rather than H.264 High 10, which plays almost nowhere."""
    fmt = av.VideoFormat(settings.pix_fmt)
    if fmt.is_rgb:
        return ""
    ten_bit = f"{settings.pix_fmt}10le"
    formats = {video_format.name for video_format in av.Codec(settings.codec, "w").video_formats or ()}
    if ten_bit in formats and settings.codec != "libx264":
        return f"; --pix-fmt {ten_bit} writes 10 bits"
    try:
        av.Codec("libx265", "w")
    except (av.FFmpegError, ValueError):
        return ""
    if "libx265" not in supported_codecs(output.suffix.lower()):
        return ""
    return "; --codec libx265 --pix-fmt yuv420p10le writes 10 bits"


def format_for(suffix: str) -> str | None:
    """The muxer FFmpeg picks for a file name ending in ``suffix``."""
    return {".mkv": "matroska", ".m4v": "mp4"}.get(suffix)


def _probe_container(suffix: str) -> av.container.OutputContainer:
    return av.open(io.BytesIO(), "w", format=format_for(suffix) or suffix.lstrip("."))


def supported_codecs(suffix: str) -> set[str]:
    """The codecs (by decoder and encoder name) the muxer for ``suffix`` accepts."""
    with _probe_container(suffix) as probe:
        return set(probe.supported_codecs)
