"""``cliplitenhance``: a GStreamer video filter that runs the cliplit runtime on every frame (docs/gstreamer.md).

GStreamer's own ``onnxinference`` only attaches tensors to buffers as metadata; this element replaces each frame by
its enhanced version, so it drops into any decode → filter → encode or camera → display pipeline::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! cliplitenhance model=clip-lit-rt \\
        ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4

It is an ordinary ``GstBase.BaseTransform`` written in Python, loaded by GStreamer's Python plugin loader through
``gst_plugin/python/cliplitenhance.py`` beside this module (the loader only looks at ``python/`` folders on
``GST_PLUGIN_PATH``; ``python -m cliplit.runtime.gst_element`` prints :data:`PLUGIN_PATH`). Frames go through
:class:`cliplit.runtime.enhancer.Enhancer`, so ``model`` takes anything ``cliplit enhance --model`` takes and
``backend``, ``threads``, ``precision``, ``device``, ``scale``, ``upsample`` and ``temporal-smoothing`` mean what
the command's options of those names mean.

Caps: what decoders emit (planar and semi-planar 8-bit YUV: I420, NV12, NV21, Y42B, Y444) or packed 8-bit BGR/RGB,
the same format and size on both sides; timestamps, durations and flags are copied from each input buffer to its
output (``BaseTransform``'s metadata copy), so no frame is dropped, added or retimed. YUV is converted to the
network's BGR and back by :func:`cliplit.runtime.video_colour.frame_to_bgr` and
:func:`~cliplit.runtime.video_colour.bgr_to_frame` (swscale, by the matrix and range of the caps' colorimetry), the
conversion ``cliplit enhance`` reads and writes files with: GStreamer's ``videoconvert`` rounds differently, and the
enhancement amplifies that in the shadows (33 dB between the two tools' outputs on sharp 720p footage, 26 dB on
full-range clips, against 38+ dB with the shared conversion; docs/gstreamer.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from cliplit.runtime.video_colour import UNSPECIFIED, VideoColour, bgr_to_frame, frame_to_bgr

ELEMENT_NAME = "cliplitenhance"
#: the folder to put on ``GST_PLUGIN_PATH``: it holds ``python/cliplitenhance.py``, the file the loader imports
PLUGIN_PATH = Path(__file__).resolve().parent / "gst_plugin"
#: GStreamer's raw formats the element takes, with FFmpeg's name for the same memory layout
PIX_FMT = {
    "I420": "yuv420p",
    "NV12": "nv12",
    "NV21": "nv21",
    "Y42B": "yuv422p",
    "Y444": "yuv444p",
    "BGR": "bgr24",
    "RGB": "rgb24",
}
_PACKED = ("bgr24", "rgb24")
#: FFmpeg's matrix (AVColorSpace) for GStreamer's GstVideoColorMatrix (unknown, RGB, FCC, BT.709, BT.601, SMPTE 240M,
#: BT.2020); FFmpeg has no matrix for RGB (0 means identity), so RGB's is left unspecified
_AV_MATRIX = {0: UNSPECIFIED, 2: 4, 3: 1, 4: 6, 5: 7, 6: 9}
#: FFmpeg's range (AVColorRange) for GStreamer's GstVideoColorRange (unknown, 0-255, 16-235)
_AV_RANGE = {0: 0, 1: 2, 2: 1}


@functools.cache
def element_factory() -> tuple[str, Any, type]:  # noqa: C901  (it counts the element class's methods)
    """``(name, rank, class)``, what the Python plugin loader reads as ``__gstelementfactory__``.

    Everything GStreamer lives in here, imported on the first call: the runtime's other modules (and the tests that
    import all of them) must not need PyGObject, which only Debian's GStreamer packages provide.
    """
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstBase", "1.0")
    gi.require_version("GstVideo", "1.0")
    from gi.repository import GLib, GObject, Gst, GstBase, GstVideo

    if TYPE_CHECKING:
        from cliplit.runtime.enhancer import Enhancer

    #: what both pads take: the formats of PIX_FMT (YUV first: decoders' own, so no converter is needed before the
    #: element) of any size the model accepts (the contract's minimum is 2×2)
    CAPS = Gst.Caps.from_string(
        f"video/x-raw, format=(string){{ {', '.join(PIX_FMT)} }}, width=(int)[ 2, 2147483647 ], "
        "height=(int)[ 2, 2147483647 ], framerate=(fraction)[ 0/1, 2147483647/1 ]"
    )

    Gst.init(None)
    _RW = GObject.ParamFlags.READWRITE

    #: the element's properties as PyGObject declares them: (type, nick, blurb, [minimum, maximum,] default, flags)
    PROPERTIES: dict[str, tuple[Any, ...]] = {
        "model": (
            str,
            "model",
            "an .onnx or .engine file, weights (.pth) or a released name such as clip-lit or clip-lit-rt, as for "
            "cliplit enhance --model (empty: the released CLIP-LIT)",
            "",
            _RW,
        ),
        "backend": (
            str,
            "backend",
            "inference backend, as --backend (default: auto)",
            "auto",
            _RW,
        ),
        "threads": (int, "threads", "CPU threads (0: all)", 0, 4096, 0, _RW),
        "precision": (
            str,
            "precision",
            "OpenVINO precision, as --precision (empty: the backend's default)",
            "",
            _RW,
        ),
        # -1: not given, so a backend without a GPU index is not refused it (TensorRT and CUDA then use GPU 0)
        "device": (int, "device", "GPU index for TensorRT and CUDA (-1: GPU 0)", -1, 1024, -1, _RW),
        "scale": (
            float,
            "scale",
            "run the network at this fraction of the resolution and upsample its light map",
            0.0,
            1.0,
            1.0,
            _RW,
        ),
        "upsample": (str, "upsample", "light-map upsampling for scale < 1", "bilinear", _RW),
        "temporal-smoothing": (
            float,
            "temporal smoothing",
            "fixed cameras: L = A*L_prev + (1-A)*L where nothing moves (0: off)",
            0.0,
            0.999,
            0.0,
            _RW,
        ),
    }

    class CliplitEnhance(GstBase.BaseTransform):
        """Replace each frame by its CLIP-LIT enhancement, keeping its format and timestamps."""

        __gstmetadata__ = (
            "CLIP-LIT backlit image enhancement",
            "Filter/Effect/Video",
            "Enhances backlit video with a cliplit model (light map L; output = clamp(x / L, 0, 1))",
            "cliplit",
        )
        __gsttemplates__ = (
            Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, CAPS),
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, CAPS),
        )
        # PyGObject turns this into GObject properties and removes it from the class: defaults come from PROPERTIES
        __gproperties__ = PROPERTIES

        def __init__(self) -> None:
            super().__init__()
            # a property's default is the value before its flags
            self.settings: dict[str, Any] = {name: spec[-2] for name, spec in PROPERTIES.items()}
            self.enhancer: Enhancer | None = None
            self.info: GstVideo.VideoInfo | None = None
            #: how the negotiated format is converted to the network's BGR and back (set with the caps)
            self.layout: FrameLayout | None = None

        def do_get_property(self, prop: GObject.ParamSpec) -> Any:
            return self.settings[prop.name]

        def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
            if self.enhancer is not None:  # the model is loaded in start(): a change now would silently do nothing
                Gst.warning(f"{ELEMENT_NAME}: {prop.name} changed while running; it applies from the next start")
            self.settings[prop.name] = value

        def do_start(self) -> bool:
            """Load the model when the pipeline starts (not per frame), reporting a bad model as an element error."""
            from cliplit.core.errors import CliplitError
            from cliplit.runtime.backends import options_for, select_backend
            from cliplit.runtime.enhancer import Enhancer

            settings = self.settings
            model = settings["model"] or None
            try:
                name = select_backend(model, settings["backend"])
                backend = options_for(
                    name,
                    threads=settings["threads"] or None,
                    device=settings["device"] if settings["device"] >= 0 else None,
                    precision=settings["precision"] or None,
                )
                self.enhancer = Enhancer.open(
                    model,
                    backend,
                    scale=settings["scale"],
                    upsample=settings["upsample"],
                    temporal_smoothing=settings["temporal-smoothing"],
                )
            except (CliplitError, OSError, ValueError) as error:
                self._post_error(f"cannot load model {model or '(default)'}: {error}")
                return False
            Gst.info(f"{ELEMENT_NAME}: {self.enhancer.describe()}")
            return True

        def do_stop(self) -> bool:
            if self.enhancer is not None:
                self.enhancer.close()
                self.enhancer = None
            return True

        def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
            self.info = info = GstVideo.VideoInfo.new_from_caps(incaps)
            if info is None:
                return False
            colorimetry = info.colorimetry
            self.layout = FrameLayout(
                PIX_FMT[info.finfo.name],
                info.width,
                info.height,
                colour=VideoColour(
                    colorspace=_AV_MATRIX.get(int(colorimetry.matrix), UNSPECIFIED),
                    color_range=_AV_RANGE.get(int(colorimetry.range), 0),
                ),
            )
            if self.enhancer is not None:
                self.enhancer.reset()  # a new stream: temporal smoothing starts over
            return True

        def do_transform(self, inbuf: Gst.Buffer, outbuf: Gst.Buffer) -> Gst.FlowReturn:
            """Enhance one frame into ``outbuf``; BaseTransform has already copied the timestamps and flags to it."""
            assert self.enhancer is not None and self.info is not None and self.layout is not None
            planes = (self.info.offset, self.info.stride)
            try:
                with _mapped(inbuf, Gst.MapFlags.READ) as data:
                    bgr = self.layout.to_bgr(data, *planes)
                enhanced = self.enhancer.enhance(bgr)
                with _mapped(outbuf, Gst.MapFlags.WRITE) as data:
                    self.layout.from_bgr(enhanced, data, *planes)
            except Exception as error:
                self._post_error(f"enhancing a frame failed: {error}")
                return Gst.FlowReturn.ERROR
            return Gst.FlowReturn.OK

        def _post_error(self, text: str) -> None:
            error = GLib.Error.new_literal(Gst.StreamError.quark(), text, Gst.StreamError.FAILED)
            self.post_message(Gst.Message.new_error(self, error, text))

    return ELEMENT_NAME, Gst.Rank.NONE, CliplitEnhance


@contextmanager
def _mapped(buffer: Any, flags: Any) -> Iterator[np.ndarray]:
    """A buffer's memory as a flat uint8 array for the ``with`` block (gst-python maps WRITE as a writable view)."""
    ok, info = buffer.map(flags)
    if not ok:
        raise RuntimeError("cannot map the buffer")
    try:
        yield np.frombuffer(info.data, np.uint8)
    finally:
        buffer.unmap(info)


@dataclass(frozen=True)
class FrameLayout:
    """How one negotiated raw format is converted to the network's H×W×3 BGR and back, between GStreamer's mapped
    buffer memory (planes at ``offsets``, rows ``strides`` bytes apart) and swscale (through PyAV frames)."""

    pix_fmt: str
    width: int
    height: int
    #: the matrix and range of the caps' colorimetry (FFmpeg's numbers); only YUV uses them
    colour: VideoColour

    def to_bgr(self, data: np.ndarray, offsets: Sequence[int], strides: Sequence[int]) -> np.ndarray:
        """The frame in ``data`` as BGR, by the conversion ``cliplit enhance`` reads video files with."""
        if self.pix_fmt in _PACKED:
            return _packed(self, data, offsets, strides).copy()
        frame = av.VideoFrame(self.width, self.height, self.pix_fmt)
        for plane, view in zip(frame.planes, _planes(frame, data, offsets, strides), strict=True):
            _plane_rows(plane, view.shape[1])[:] = view
        frame.colorspace, frame.color_range = self.colour.colorspace, self.colour.color_range
        return frame_to_bgr(frame)

    def from_bgr(self, image: np.ndarray, data: np.ndarray, offsets: Sequence[int], strides: Sequence[int]) -> None:
        """Write the BGR ``image`` into ``data`` in this format, by the conversion ``cliplit enhance`` writes with."""
        if self.pix_fmt in _PACKED:
            _packed(self, data, offsets, strides)[:] = image[:, :, ::-1] if self.pix_fmt == "rgb24" else image
            return
        _, _, matrix, color_range = self.colour.output_tags(rgb=False)
        frame = bgr_to_frame(image, self.pix_fmt, matrix, color_range)
        for plane, view in zip(frame.planes, _planes(frame, data, offsets, strides), strict=True):
            view[:] = _plane_rows(plane, view.shape[1])


def _packed(layout: FrameLayout, data: np.ndarray, offsets: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    """The H×W×3 pixels of a packed 24-bit frame, as stored (BGR or RGB); GStreamer pads each row to a multiple of
    four bytes (``stride``)."""
    return np.lib.stride_tricks.as_strided(
        data[offsets[0] :],
        shape=(layout.height, layout.width, 3),
        strides=(strides[0], 3, 1),
        writeable=data.flags.writeable,
    )


def _planes(frame: av.VideoFrame, data: np.ndarray, offsets: Sequence[int], strides: Sequence[int]) -> list[np.ndarray]:
    """Views of GStreamer's planes in ``data`` (rows × bytes of pixels, padding left out), shaped like ``frame``'s:
    a plane's row holds one byte per component stored in it (two for NV12's interleaved chroma)."""
    views = []
    for index, plane in enumerate(frame.planes):
        row_bytes = plane.width * sum(component.plane == index for component in frame.format.components)
        views.append(
            np.lib.stride_tricks.as_strided(
                data[offsets[index] :],
                shape=(plane.height, row_bytes),
                strides=(strides[index], 1),
                writeable=data.flags.writeable,
            )
        )
    return views


def _plane_rows(plane: av.VideoPlane, row_bytes: int) -> np.ndarray:
    """A PyAV plane's memory as rows × ``row_bytes`` (its rows are ``line_size`` apart)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :row_bytes]


if __name__ == "__main__":  # export GST_PLUGIN_PATH=$(python -m cliplit.runtime.gst_element)
    print(PLUGIN_PATH)
