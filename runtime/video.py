"""Video files through PyAV (FFmpeg's libraries): decoding to BGR frames with their timestamps, encoding them back
with the same timestamps, and copying the audio alongside.

Why PyAV rather than pipes to an ffmpeg process (what cliplit used before): a pipe of raw frames carries no
timestamps, so the encoder had to assume a constant frame rate and variable-frame-rate input (what phones record) came
out re-timed and out of sync with its audio. PyAV hands over every decoded frame with its presentation time, lets the
encoder take the same times (VFR stays VFR), muxes the input's audio packets in the same pass, and reports decoding
errors as exceptions instead of lines on stderr. Measured against the pipes in docs/runtime.md.

* Every decoded frame comes out exactly once, in presentation order; a display-rotation tag (portrait phone video)
  is applied, as players and the ffmpeg command do, so frames are upright.
* A truncated or damaged input does not stop at an exception: decoding goes on past bad packets, and
  :attr:`VideoReader.damage` then says what was lost and how many frames were recovered.
* 4:2:0 output (the default: the only kind browsers and phones play) needs even sizes, and H.264 cannot crop a
  single pixel, so an odd-sized frame is padded by repeating its last column/row: the output is at most one pixel
  wider and taller and holds every input pixel.
* The output is tagged with the input's colour primaries, transfer function, matrix and range (:class:`VideoColour`)
  and converted to YUV by that matrix and range: the enhanced frames are still in the input's colour space, so a
  BT.2020 HLG phone clip tagged BT.709 would play washed out. The network works on 8-bit frames, so a 10-bit input
  loses precision; :func:`precision_warning` says so.
* A truncated input's audio ends on a whole packet: the damaged packets it ends with (the stump of the packet the cut
  went through) are left out, since no decoder reads them (PyAV raises, ffmpeg logs "Input buffer exhausted before
  END element found").
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cliplit.core.errors import CliplitError
from cliplit.core.text import plural

#: default video codec per output suffix (anything else: libx264)
CODEC_BY_SUFFIX = {".webm": "libvpx-vp9"}
#: audio encoder for a container that cannot hold the input's audio codec as it is
AUDIO_FALLBACK_BY_SUFFIX = {".webm": "libopus", ".ogg": "libopus"}
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
#: an input is called truncated when its last decoded frame ends this long before the container says it should
TRUNCATION_TOLERANCE_S = 0.5
_MP4_LIKE = (".mp4", ".mov", ".m4v")
#: FFmpeg's number for a colour tag (primaries, transfer, matrix) the file leaves unspecified
UNSPECIFIED = 2
_RESERVED = (0, UNSPECIFIED, 3)
BT709 = 1
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
_LIMITED, _FULL = 1, 2  # AVColorRange


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
        if self.color_primaries not in _RESERVED:
            names.append(_PRIMARIES_NAMES.get(self.color_primaries, f"primaries {self.color_primaries}"))
        if self.color_trc not in _RESERVED:
            names.append(self.hdr or f"transfer {self.color_trc}")
        return "/".join(names)


@dataclass(frozen=True)
class VideoInfo:
    """What the runtime needs to know about an input video (sizes as displayed, i.e. after rotation)."""

    width: int
    height: int
    fps: Fraction
    duration: float
    has_audio: bool
    time_base: Fraction
    rotation: int = 0
    colour: VideoColour = field(default_factory=VideoColour)

    @property
    def estimated_frames(self) -> int | None:
        """Frame count from duration × rate (for the progress bar; the exact count is whatever decodes)."""
        return round(self.duration * self.fps) if self.duration > 0 and self.fps > 0 else None


@dataclass
class DecodedFrame:
    """One upright H×W×3 uint8 BGR frame with its presentation timestamp and duration in the stream's time base."""

    image: np.ndarray
    pts: int
    duration: int | None


class VideoReader:
    """Decode a video file to BGR frames with their timestamps, all of them, in presentation order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CliplitError(f"{self.path}: no such file")
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
            raise CliplitError(f"{self.path}: not a readable video (corrupt, truncated or not a video)") from error
        if not self._container.streams.video:
            self._container.close()
            raise CliplitError(f"{self.path}: not a readable video (it has no video stream)")
        self._stream = stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: same frames, several cores
        self._errors = 0
        first = self._first_frame()
        rotation = _quarter_turns(first.rotation) * 90
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.info = VideoInfo(
            width=width,
            height=height,
            fps=Fraction(rate) if rate else Fraction(0),
            duration=self._expected_end() or 0.0,
            has_audio=bool(self._container.streams.audio),
            time_base=Fraction(stream.time_base),
            rotation=rotation,
            colour=VideoColour.of_frame(first),
        )
        #: frames handed out so far
        self.decoded = 0
        #: after iterating: what was wrong with the input (truncated, undecodable packets), or None
        self.damage: str | None = None

    def _first_frame(self) -> av.VideoFrame:
        """Decode the first frame now, so that an unreadable file fails before any work (and to learn its size)."""
        self._frames = self._decode_all()
        try:
            first = next(self._frames)
        except (StopIteration, av.FFmpegError) as error:
            self._container.close()
            raise CliplitError(f"{self.path}: not a readable video (no frame could be decoded)") from error
        self._pending: av.VideoFrame | None = first
        return first

    def _decode_all(self) -> Iterator[av.VideoFrame]:
        """Every frame the decoder can give; a packet it cannot read is counted and skipped, and an error of the
        demuxer (a file cut short) ends the stream."""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError:
                self._errors += 1
                return
            self._errors += packet.is_corrupt  # the demuxer saw damage (MPEG-TS continuity, checksums)
            try:
                yield from packet.decode()
            except av.FFmpegError:
                self._errors += 1

    def __iter__(self) -> Iterator[DecodedFrame]:
        previous: int | None = None
        step = round(1 / (self.info.fps * self.info.time_base)) if self.info.fps else 1
        last_end = None
        frames = self._frames
        if self._pending is not None:
            frames = _chain(self._pending, frames)
            self._pending = None
        for frame in frames:
            pts = frame.pts if frame.pts is not None else (previous + step if previous is not None else 0)
            if previous is not None and pts <= previous:  # a broken stream; an encoder needs increasing times
                pts = previous + 1
            previous = pts
            duration = frame.duration or None
            last_end = pts + (duration or step)
            self.decoded += 1
            yield DecodedFrame(self._upright(frame), pts, duration)
        self.damage = self._describe_damage(last_end)

    def _upright(self, frame: av.VideoFrame) -> np.ndarray:
        # The frame's own colour range: full-range (JPEG-style) phone video must not be read as limited range.
        image = frame.to_ndarray(format="bgr24", src_color_range=frame.color_range or None)
        turns = _quarter_turns(frame.rotation)
        return np.ascontiguousarray(np.rot90(image, turns)) if turns else image

    def _expected_end(self) -> float | None:
        """Where the container says the video stream ends, in seconds (None where it does not say)."""
        stream = self._stream
        start = stream.start_time or 0
        if stream.duration:
            return float((start + stream.duration) * stream.time_base)
        tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")  # Matroska writes one per stream
        if tag:
            try:
                hours, minutes, seconds = tag.split(":")
                return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            except ValueError:
                return None
        return None

    def _describe_damage(self, last_end: int | None) -> str | None:
        problems = []
        if self._errors:
            problems.append(f"{plural(self._errors, 'damaged or undecodable packet')}")
        expected = self._expected_end()
        reached = float(last_end * self.info.time_base) if last_end is not None else 0.0
        if expected is not None and reached < expected - TRUNCATION_TOLERANCE_S:
            problems.append(f"it ends at {reached:.2f} s of the {expected:.2f} s its container announces")
        if not problems:
            return None
        total = self.info.estimated_frames
        of = f" of about {total}" if total and total > self.decoded else ""
        return (
            f"{self.path.name} is truncated or damaged ({'; '.join(problems)}): {self.decoded}{of} frames "
            "were recovered"
        )

    def close(self) -> None:
        self._container.close()


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield first
    yield from rest


def _quarter_turns(rotation: float | None) -> int:
    """Counter-clockwise quarter turns for a display rotation in degrees (ffmpeg's sign: positive turns left)."""
    return round((rotation or 0) / 90) % 4


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
    if video_codec.name not in _supported_codecs(suffix):
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
    if "libx265" not in _supported_codecs(output.suffix.lower()):
        return ""
    return "; --codec libx265 --pix-fmt yuv420p10le writes 10 bits"


def _format_for(suffix: str) -> str | None:
    """The muxer FFmpeg picks for a file name ending in ``suffix``."""
    return {".mkv": "matroska", ".m4v": "mp4"}.get(suffix)


def _probe_container(suffix: str) -> av.container.OutputContainer:
    return av.open(io.BytesIO(), "w", format=_format_for(suffix) or suffix.lstrip("."))


def _supported_codecs(suffix: str) -> set[str]:
    """The codecs (by decoder and encoder name) the muxer for ``suffix`` accepts."""
    with _probe_container(suffix) as probe:
        return set(probe.supported_codecs)


class VideoWriter:
    """Encode BGR frames at given timestamps into a video file and copy ``audio_from``'s audio streams beside them,
    interleaved by time, in one pass."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        *,
        time_base: Fraction,
        rate: Fraction,
        settings: EncoderSettings,
        audio_from: Path | None = None,
        colour: VideoColour | None = None,
    ) -> None:
        self.path = Path(path)
        self.shape = (height, width, 3)
        self.settings = settings
        self.time_base = time_base
        self.colour = colour or VideoColour()
        self.frames = 0
        self.end_time = 0.0
        #: (primaries, transfer, matrix, range) the output is tagged with (see :meth:`_output_colour`)
        self.output_colour = self._output_colour()
        suffix = self.path.suffix.lower()
        options = {"movflags": "+faststart"} if suffix in _MP4_LIKE else {}
        try:
            self._container = av.open(str(self.path), "w", format=_format_for(suffix), options=options)
            self._stream = self._add_video_stream(width, height, rate)
            self._audio = _AudioCopy(self._container, audio_from, suffix) if audio_from is not None else None
        except av.FFmpegError as error:
            raise self._failure(error) from error

    def _add_video_stream(self, width: int, height: int, rate: Fraction) -> av.VideoStream:
        settings = self.settings
        stream = self._container.add_stream(settings.codec, rate=rate)
        stream.width, stream.height = settings.coded_size(width, height)
        stream.pix_fmt = settings.pix_fmt
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        options = {}
        if settings.crf is not None:
            options["crf"] = str(settings.crf)
        if settings.preset is not None:
            options["preset"] = settings.preset
        if settings.codec == "libvpx-vp9":
            options["b"] = "0"  # constant quality
        if settings.codec == "libx265":
            options["x265-params"] = "log-level=error"  # x265 prints two dozen lines of settings otherwise
        stream.options = options
        # Say how the pixels are to be shown, so players do not guess (and guess differently).
        primaries, transfer, matrix, color_range = self.output_colour
        context = stream.codec_context
        if primaries != UNSPECIFIED:
            context.color_primaries = primaries
        if transfer != UNSPECIFIED:
            context.color_trc = transfer
        if matrix is not None:
            context.colorspace, context.color_range = matrix, color_range
        return stream

    def _output_colour(self) -> tuple[int, int, int | None, int]:
        """The output's primaries, transfer function, matrix and range: the input's (the enhanced frames are still in
        its colour space), BT.709 and limited range where it does not say (and where swscale has no such matrix).
        An RGB output has no matrix (None) and takes only the tags its input has."""
        colour = self.colour
        rgb = av.VideoFormat(self.settings.pix_fmt).is_rgb
        default = UNSPECIFIED if rgb else BT709
        primaries = colour.color_primaries if colour.color_primaries not in _RESERVED else default
        transfer = colour.color_trc if colour.color_trc not in _RESERVED else default
        if rgb:
            return primaries, transfer, None, 0
        color_range = _FULL if colour.color_range == _FULL else _LIMITED
        return primaries, transfer, _OUTPUT_MATRIX.get(colour.colorspace, BT709), color_range

    def write(self, image: np.ndarray, pts: int, duration: int | None = None) -> None:
        if image.shape != self.shape:
            raise CliplitError(
                f"frame {self.frames} is {image.shape[1]}x{image.shape[0]}, but the video is "
                f"{self.shape[1]}x{self.shape[0]}: a video cannot change size"
            )
        frame = av.VideoFrame.from_ndarray(self._padded(image), format="bgr24")
        primaries, transfer, matrix, color_range = self.output_colour
        if matrix is not None:  # YUV: converted by the matrix and range the stream is tagged with
            frame = frame.reformat(
                format=self.settings.pix_fmt, dst_colorspace=_SWS_MATRIX[matrix], dst_color_range=color_range
            )
            frame.colorspace, frame.color_range = matrix, color_range
        # Tags only (reformat's dst_color_trc/dst_color_primaries would ask swscale to convert).
        frame.color_primaries, frame.color_trc = primaries, transfer
        frame.pts, frame.time_base = pts, self.time_base
        if duration:
            frame.duration = duration
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.end_time = max(self.end_time, float((pts + (duration or 0)) * self.time_base))
            if self._audio is not None:
                self._audio.copy_until(float(pts * self.time_base))
        except av.FFmpegError as error:
            raise self._failure(error) from error
        self.frames += 1

    def _padded(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        coded_width, coded_height = self.settings.coded_size(width, height)
        if (coded_width, coded_height) == (width, height):
            return image
        return np.pad(image, ((0, coded_height - height), (0, coded_width - width), (0, 0)), mode="edge")

    def close(self, *, audio_until: float | None = None) -> None:
        """Flush the encoder, add the rest of the audio (up to ``audio_until`` seconds, or all of it) and finish the
        file; raise a clear error if that fails."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.finish(audio_until)
            self._container.close()
        except (av.FFmpegError, OSError) as error:
            raise self._failure(error) from error

    def abort(self) -> None:
        """Stop at once (the caller deletes the partial file)."""
        if self._audio is not None:
            self._audio.close()
        with contextlib.suppress(av.FFmpegError, OSError):  # the file is being thrown away; its trailer does not matter
            self._container.close()

    def _failure(self, error: Exception) -> CliplitError:
        if isinstance(error, OSError) and error.errno:  # the file system (a full disk), not the options
            return CliplitError(f"encoding failed: {error.strerror or error}")
        settings = self.settings
        options = f"--codec {settings.codec} --pix-fmt {settings.pix_fmt}"
        if settings.crf is not None:
            options += f" --crf {settings.crf}"
        if settings.preset is not None:
            options += f" --preset {settings.preset}"
        why = getattr(error, "strerror", None) or str(error)
        return CliplitError(f"encoding failed with {options} into a {self.path.suffix} file: {why}")


class _AudioCopy:
    """The audio streams of an input, copied packet by packet into an output (re-encoded only where the container
    cannot hold the codec), interleaved with the video by time.

    A file cut short (a copy interrupted mid-way) can end inside an audio packet: an MP4 whose index is at the front
    still lists the whole packet, and the demuxer hands over the stump, which no decoder reads. So each copied packet
    is decoded on the side (audio decodes at hundreds of times real time), and packets that fail are held back until
    a good one follows: undecodable packets amid the audio are copied as they are (leaving them out would shift the
    rest of the audio against the video), those at the end of what is copied are left out, so the output's audio
    ends on a whole packet.
    """

    def __init__(self, output: av.container.OutputContainer, source: Path, suffix: str) -> None:
        self._input = av.open(str(source), metadata_errors="ignore")
        self._streams = list(self._input.streams.audio)
        supported = set(output.supported_codecs)
        self._targets: dict[int, tuple[av.AudioStream, bool]] = {}
        for stream in self._streams:
            if stream.codec_context.name in supported:
                self._targets[stream.index] = (output.add_stream_from_template(stream), True)
            else:
                fallback = AUDIO_FALLBACK_BY_SUFFIX.get(suffix, "aac")
                rate = 48000 if fallback == "libopus" else stream.rate
                target = output.add_stream(fallback, rate=rate, layout=stream.layout)
                self._targets[stream.index] = (target, False)
        self._output = output
        self._packets = self._input.demux(self._streams)
        self._pending: av.Packet | None = None
        #: per copied stream: the undecodable packets since its last good one (written if a good one follows)
        self._held: dict[int, list[av.Packet]] = {}
        #: copied streams whose decoder has read a packet: only those are trusted to call a packet damaged (a
        #: decoder that reads nothing, e.g. one missing its setup data, says nothing about the last packet)
        self._decoding: set[int] = set()
        self._done = False
        #: packets left out: the damaged packets a copied stream ended with, and any a re-encoder could not decode
        self.dropped = 0

    def copy_until(self, until: float | None) -> None:
        """Write the audio packets that start before ``until`` seconds (all that are left for None)."""
        while not self._done:
            packet = self._pending or self._next_packet()
            self._pending = None
            if packet is None:
                self._done = True
                return
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            if until is not None and packet.pts is not None and packet.pts * packet.time_base >= until:
                self._pending = packet
                return
            self._write(packet)

    def _next_packet(self) -> av.Packet | None:
        try:
            return next(self._packets, None)
        except av.FFmpegError:  # a truncated input: its audio ends where the file does
            return None

    def _write(self, packet: av.Packet) -> None:
        target, copy = self._targets[packet.stream.index]
        if copy:
            held = self._held.setdefault(packet.stream.index, [])
            if not self._whole(packet):
                held.append(packet)
                return
            for damaged in held:
                self._mux_copy(damaged)
            held.clear()
            self._mux_copy(packet)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError:  # a damaged packet (the stump of a cut file): the encoder goes on with the next
            self.dropped += 1
            return
        for frame in frames:
            frame.pts = None  # the encoder numbers its own samples
            for encoded in target.encode(frame):
                self._output.mux(encoded)

    def _whole(self, packet: av.Packet) -> bool:
        """Whether a copied ``packet`` is whole: not flagged by the demuxer (an MP4 cut inside a packet gives a short,
        flagged one) and read by its stream's decoder (otherwise unused while packets are copied) if that decoder
        reads this stream at all. True where this FFmpeg build has no decoder for the codec: nothing to check with."""
        if packet.is_corrupt:
            return False
        decoder = packet.stream.codec_context
        if decoder is None:
            return True
        try:
            decoder.decode(packet)
        except av.FFmpegError:
            return packet.stream.index not in self._decoding
        self._decoding.add(packet.stream.index)
        return True

    def _mux_copy(self, packet: av.Packet) -> None:
        packet.stream = self._targets[packet.stream.index][0]
        self._output.mux(packet)

    def finish(self, until: float | None) -> None:
        """Copy the audio up to ``until`` seconds (or all of it), leaving out the damaged packets a copied stream
        ends with, and flush the re-encoders."""
        self.copy_until(until)
        self.dropped += sum(len(held) for held in self._held.values())
        self._held.clear()
        for target, copy in self._targets.values():
            if not copy:
                for encoded in target.encode(None):
                    self._output.mux(encoded)
        self.close()

    def close(self) -> None:
        self._input.close()
