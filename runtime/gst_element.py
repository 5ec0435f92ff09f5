"""``cliplitenhance``: a GStreamer video filter that runs the cliplit runtime on every frame (docs/gstreamer.md).

GStreamer's own ``onnxinference`` only attaches tensors to buffers as metadata; this element replaces each frame by
its enhanced version, so it drops into any decode → filter → encode or camera → display pipeline::

    gst-launch-1.0 filesrc location=in.mp4 ! decodebin ! videoconvert ! cliplitenhance model=clip-lit-rt \\
        ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4

It is an ordinary ``GstBase.BaseTransform`` written in Python, loaded by GStreamer's Python plugin loader through
``examples/gstreamer/python/cliplitenhance.py`` (the loader only looks at ``python/`` folders on
``GST_PLUGIN_PATH``). Frames go through :class:`cliplit.runtime.enhancer.Enhancer`, so ``model`` takes anything
``cliplit enhance --model`` takes and ``backend``, ``threads``, ``precision``, ``device``, ``scale``, ``upsample``
and ``temporal-smoothing`` mean what the command's options of those names mean. Caps: packed 8-bit BGR or RGB, the
same format and size on both sides (``videoconvert`` around the element does any conversion); timestamps, durations
and flags are copied from each input buffer to its output (``BaseTransform``'s metadata copy), so no frame is
dropped, added or retimed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

ELEMENT_NAME = "cliplitenhance"


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

    #: what both pads take: packed 8-bit BGR or RGB of any size the model accepts (the contract's minimum is 2×2)
    CAPS = Gst.Caps.from_string(
        "video/x-raw, format=(string){ BGR, RGB }, width=(int)[ 2, 2147483647 ], height=(int)[ 2, 2147483647 ], "
        "framerate=(fraction)[ 0/1, 2147483647/1 ]"
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
        "device": (int, "device", "GPU index for TensorRT and CUDA", 0, 1024, 0, _RW),
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
        """Replace each BGR or RGB frame by its CLIP-LIT enhancement, keeping its timestamps."""

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
                    device=settings["device"],
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
            self.info = GstVideo.VideoInfo.new_from_caps(incaps)
            if self.enhancer is not None:
                self.enhancer.reset()  # a new stream: temporal smoothing starts over
            return self.info is not None

        def do_transform(self, inbuf: Gst.Buffer, outbuf: Gst.Buffer) -> Gst.FlowReturn:
            """Enhance one frame into ``outbuf``; BaseTransform has already copied the timestamps and flags to it."""
            assert self.enhancer is not None and self.info is not None
            try:
                with _mapped(inbuf, Gst.MapFlags.READ) as data:
                    frame = _frame_view(data, self.info)
                    rgb = self.info.finfo.format == GstVideo.VideoFormat.RGB
                    enhanced = self.enhancer.enhance(frame[:, :, ::-1] if rgb else frame)
                with _mapped(outbuf, Gst.MapFlags.WRITE) as data:
                    _frame_view(data, self.info)[:] = enhanced[:, :, ::-1] if rgb else enhanced
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


def _frame_view(data: np.ndarray, info: Any) -> np.ndarray:
    """The H×W×3 pixels of a packed 24-bit frame (``info``: its GstVideo.VideoInfo); GStreamer pads each row to a
    multiple of four bytes (``stride``)."""
    stride, offset = info.stride[0], info.offset[0]
    return np.lib.stride_tricks.as_strided(
        data[offset:], shape=(info.height, info.width, 3), strides=(stride, 3, 1), writeable=data.flags.writeable
    )
