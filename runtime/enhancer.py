"""The public API: ``Enhancer`` turns 8-bit BGR frames into enhanced 8-bit BGR frames on any backend.

It is meant to drop into someone else's OpenCV loop::

    from cliplit.runtime.enhancer import Enhancer

    with Enhancer.open("clip-lit.onnx") as enhancer:      # or "x.engine", "clip-lit" (weights), None (default)
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.imshow("enhanced", enhancer.enhance(frame))

Everything around the network lives here, so every backend gets it: colour order and layout of the model's I/O
variant (read from the model, never guessed), ``scale`` (run the network at a lower resolution and upsample the light
map, see :mod:`cliplit.runtime.upsample`) and ``temporal_smoothing`` (see :mod:`cliplit.runtime.temporal`). Both
options need the light map, which only ``float`` I/O models output, and not those exported with
``--outputs enhanced``. With neither, a ``float`` model's own ``enhanced`` output is used (a light-map-only model's
light map is applied here), so results match the official inference bit for bit up to float rounding.

A distilled student's float model on the CPU (ONNX Runtime's CPU provider or OpenVINO's CPU device) runs 8-bit frames
at full size through its fast path (:mod:`cliplit.runtime.student_fast`: the 1/4-resolution network alone on the
backend's engine, the full-resolution part in OpenCV passes; within one 8-bit level of the whole model in FP32);
``scale``, temporal smoothing and 16-bit frames, which need the light map or float output, run the whole model.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from cliplit.core.contract import MIN_SIDE, check_frame_size, model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.images import to_bgr8
from cliplit.core.light_map import apply_light_map_bgr8, to_uint8, to_uint16
from cliplit.runtime.backends import Backend, BackendOptions, open_backend
from cliplit.runtime.student_fast import StudentFast
from cliplit.runtime.temporal import SCENE_CUT_THRESHOLD, LightMapSmoother
from cliplit.runtime.upsample import UPSAMPLE_METHODS, upsample_light_map

if TYPE_CHECKING:
    from cliplit.runtime.tiling import Tiling


class Enhancer:
    """A loaded model plus the frame-level options; not thread-safe (one per thread or per stream)."""

    def __init__(
        self,
        backend: Backend,
        *,
        scale: float = 1.0,
        upsample: str = "bilinear",
        temporal_smoothing: float = 0.0,
        scene_cut_threshold: float = SCENE_CUT_THRESHOLD,
        tiling: Tiling | None = None,
        fast: StudentFast | None = None,
    ) -> None:
        """Wrap ``backend``; ``scale`` in (0, 1], ``temporal_smoothing`` A in [0, 1) (0 = off); ``tiling``: run
        frames too large for the memory budget tile by tile (:mod:`cliplit.runtime.tiling`; ``open`` sets it up);
        ``fast``: the student's fast path for the same model (``open`` sets it up where it applies)."""
        if not 0.0 < scale <= 1.0:
            raise CliplitError(f"--scale must be in (0, 1], got {scale}")
        if upsample not in UPSAMPLE_METHODS:
            raise CliplitError(f"unknown upsampling {upsample!r}; expected one of {', '.join(UPSAMPLE_METHODS)}")
        if not 0.0 <= temporal_smoothing < 1.0:
            raise CliplitError(f"--temporal-smoothing must be in [0, 1), got {temporal_smoothing}")
        if "light_map" not in backend.outputs and (scale != 1.0 or temporal_smoothing):
            raise CliplitError(
                f"--scale and --temporal-smoothing need the light map, which this model (io={backend.io}, outputs: "
                f"{', '.join(backend.outputs)}) does not output; use a float-I/O model with its light map "
                "(export-engine --io float, without --outputs)"
            )
        self.backend = backend
        self.scale = scale
        self.upsample = upsample
        self.temporal_smoothing = temporal_smoothing
        self.smoother = LightMapSmoother(temporal_smoothing, scene_cut_threshold) if temporal_smoothing else None
        self._waiting: deque[Pending] = deque()  # submitted to the backend, outputs not yet fetched, oldest first
        self.tiling = tiling
        #: told (done, total) as each tile of a frame in tiles is ready, so a progress bar can move within a frame
        #: that takes minutes (``Pipeline`` sets it for its run; see ``cliplit.runtime.tiling.tile_light_maps``)
        self.on_tile: Callable[[int, int], None] | None = None
        #: the fast path, used for full-size 8-bit frames without temporal smoothing (it gives no light map)
        self.fast = fast if scale == 1.0 and not temporal_smoothing else None
        if fast is not None and self.fast is None:
            fast.close()

    @classmethod
    def open(
        cls,
        model: str | os.PathLike[str] | None = None,
        backend: str | BackendOptions = "auto",
        *,
        max_memory: int | None = None,
        **options: Any,
    ) -> Enhancer:
        """Load ``model`` (.onnx, .engine, weights, or None for the released CLIP-LIT) on ``backend`` — a name or a
        backend's options, e.g. ``OnnxRuntimeOptions(threads=2)`` (see :func:`cliplit.runtime.backends.open_backend`)
        — with the enhancer's ``options`` (``scale``, ``upsample``, ``temporal_smoothing``). Frames whose untiled
        inference would exceed ``max_memory`` bytes (default: half of the free memory) run in tiles."""
        from cliplit.runtime.tiling import open_tiling  # ONNX Runtime, loaded with the enhancer's model

        loaded = open_backend(model, backend)
        try:
            tiling = open_tiling(model, backend, max_memory)
            runner = loaded.open_coefficients()  # a student's fast path, where the backend has one
        except BaseException:
            loaded.close()
            raise
        return cls(loaded, tiling=tiling, fast=None if runner is None else StudentFast(runner), **options)

    @property
    def io(self) -> str:
        return self.backend.io

    def describe(self) -> str:
        """One line for logs: the backend's own description, then the enhancer's options."""
        parts = [self.backend.describe()]
        if self.fast is not None:
            parts.append("student fast path (coefficients on the backend at 1/4 resolution, the rest in OpenCV)")
        if self.scale != 1.0:
            parts.append(f"scale {self.scale:g} ({self.upsample})")
        if self.temporal_smoothing:
            parts.append(f"temporal smoothing {self.temporal_smoothing:g}")
        if self.tiling is not None:
            parts.append(self.tiling.describe())
        return ", ".join(parts)

    def enhance(self, frame: np.ndarray) -> np.ndarray:
        """Enhance one H×W×3 uint8 BGR frame (grayscale, BGRA and 16-bit are converted) and return H×W×3 uint8 BGR.

        Float frames are refused rather than guessed at: 0..1 and 0..255 floats look alike in a dark frame."""
        return self.enhance_batch([frame])[0]

    def reason_for_8bit(self) -> str | None:
        """Why a 16-bit frame would lose its depth here, or None where :meth:`enhance_16bit` keeps it: a uint8-I/O
        model takes and gives 8 bits, an engine computing in FP16 or bf16 has about 8 bits of precision (a TensorRT
        engine without its sidecar is taken for one), and temporal smoothing runs on 8-bit frames."""
        if self.io == "uint8":
            return "the model's input and output are 8-bit (uint8 I/O)"
        precision = self.backend.details().get("precision")
        if precision is None and self.backend.name == "tensorrt":
            precision = "an unknown precision"
        if precision not in (None, "fp32"):
            return f"the {self.backend.name} backend computes in {precision}, about 8 bits of precision"
        if self.smoother is not None:
            return "temporal smoothing runs on 8-bit frames"
        return None

    def enhance_16bit(self, frame: np.ndarray) -> np.ndarray:
        """Enhance one H×W×3 uint16 BGR frame (16-bit PNG/TIFF) to H×W×3 uint16 BGR, computed in float from all 16
        bits: the float contract's input is frame / 65535 and the result is rounded to 16 bits, so smooth gradients
        stay smooth where an 8-bit round trip would band them. A frame tiled for memory gets the light map of its
        8-bit rounding (the tiled graphs take 8-bit frames; the light map is smooth), divided into its 16 bits.
        Refused where :meth:`reason_for_8bit` gives a reason."""
        reason = self.reason_for_8bit()
        if reason is not None:
            raise CliplitError(f"16-bit enhancement needs a float-I/O model computing in FP32: {reason}")
        frame = np.asarray(frame)
        if frame.dtype != np.uint16 or frame.ndim != 3 or frame.shape[2] != 3:
            raise CliplitError(f"enhance_16bit takes H×W×3 uint16 BGR frames, not {frame.dtype} {frame.shape}")
        height, width = frame.shape[:2]
        check_frame_size(height, width)
        size = (max(MIN_SIDE, round(width * self.scale)), max(MIN_SIDE, round(height * self.scale)))
        full_size = size == (width, height)
        tile = None if self.tiling is None else self.tiling.plan(size[1], size[0], light_map=not full_size)
        if tile is not None:
            frame8 = to_bgr8(frame)
            if full_size:
                return self._tiled_16bit(frame, frame8, tile)
            small = cv2.resize(frame8, size, interpolation=cv2.INTER_AREA)
            light_map = self.tiling.light_map(small, tile, self.on_tile)
        else:
            unit = np.divide(frame, np.float32(65535.0), dtype=np.float32)  # BGR in [0, 1]
            if not full_size:
                unit = cv2.resize(unit, size, interpolation=cv2.INTER_AREA)
            batch = np.ascontiguousarray(unit[None, :, :, ::-1].transpose(0, 3, 1, 2))  # N×3×H×W RGB
            self._make_room()
            outputs = self.backend.wait(self.backend.submit(batch))
            if full_size and "enhanced" in outputs:
                return to_uint16(outputs["enhanced"][0][::-1].transpose(1, 2, 0))
            light_map = outputs["light_map"][0, 0]
        # the guided filter's guide is in 8-bit levels; a bilinear upsampling reads only the frame's size
        light_map = upsample_light_map(light_map, to_bgr8(frame) if self.upsample == "guided" else frame, self.upsample)
        return apply_light_map_bgr8(frame, light_map)

    def _tiled_16bit(self, frame: np.ndarray, frame8: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
        """Each tile's light map, computed from the 8-bit rounding, divided into the 16-bit tile as it comes."""
        from cliplit.runtime.tiling import tile_light_maps

        assert self.tiling is not None
        enhanced = np.empty_like(frame)
        for region, light_map in tile_light_maps(self.tiling.split, frame8, tile, on_tile=self.on_tile):
            enhanced[region.slices] = apply_light_map_bgr8(frame[region.slices], light_map)
        return enhanced

    def enhance_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Enhance consecutive frames; frames of one size run as one batch, in order (temporal smoothing sees them
        in this order)."""
        return self.collect(self.submit(frames))

    def submit(self, frames: Sequence[np.ndarray]) -> list[Pending]:
        """Start enhancing ``frames`` and return at once where the backend can (``Backend.submit``); pass the
        result to :meth:`collect`, in submission order. Lets a pipeline keep two batches in flight."""
        frames = [to_bgr8(_checked_dtype(frame, index)) for index, frame in enumerate(frames)]
        pending: list[Pending] = []
        start = 0
        while start < len(frames):
            stop = start + 1
            while stop < len(frames) and frames[stop].shape == frames[start].shape:
                stop += 1
            pending.append(self._submit_same_size(frames[start:stop]))
            start = stop
        return pending

    def collect(self, pending: list[Pending]) -> list[np.ndarray]:
        """The enhanced frames of a :meth:`submit`, in order."""
        results: list[np.ndarray] = []
        for group in pending:
            if group.fast is not None:
                results.extend(group.fast.result())
                continue
            if group.tile is not None:
                results.extend(self._tiled(group))
                continue
            results.extend(self._finish(group.frames, group.network_size, self._outputs(group)))
        return results

    def _outputs(self, group: Pending) -> dict[str, np.ndarray]:
        if group.outputs is None:
            group.outputs = self.backend.wait(group.handle)
        if group in self._waiting:
            self._waiting.remove(group)
        return group.outputs

    def _make_room(self) -> None:
        """Fetch the oldest outputs while the backend has no free slot (``Backend.max_in_flight``).

        A batch of mixed frame sizes becomes several submissions, which can exceed the backend's slots; their
        outputs are kept on the ``Pending`` until :meth:`collect`, so order and temporal smoothing are unchanged.
        """
        limit = self.backend.max_in_flight
        while limit is not None and len(self._waiting) >= limit:
            oldest = self._waiting.popleft()
            oldest.outputs = self.backend.wait(oldest.handle)

    def reset(self) -> None:
        """Forget temporal state (call between unrelated clips)."""
        if self.smoother is not None:
            self.smoother.reset()

    def close(self) -> None:
        if self.fast is not None:
            self.fast.close()
        self.backend.close()

    def __enter__(self) -> Enhancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _submit_same_size(self, frames: list[np.ndarray]) -> Pending:
        height, width = frames[0].shape[:2]
        check_frame_size(height, width)
        size = (width, height)
        if self.io != "uint8":
            size = (max(MIN_SIDE, round(width * self.scale)), max(MIN_SIDE, round(height * self.scale)))
        if size != (width, height):
            frames_in = [cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames]
        else:
            frames_in = frames
        if self.tiling is not None:
            whole_light_map = frames_in is not frames or self.smoother is not None
            tile = self.tiling.plan(size[1], size[0], len(frames), light_map=whole_light_map)
            if tile is not None:  # computed in collect(), in order with the other batches (temporal smoothing)
                return Pending(frames, size, None, tile=tile, network_frames=frames_in)
        if self.fast is not None:  # checked against the whole model's memory budget above: the fast path needs less
            return Pending(frames, size, None, fast=self.fast.submit(frames))
        batch = np.stack(frames) if self.io == "uint8" else model_input_from_bgr("float", np.stack(frames_in))
        self._make_room()
        pending = Pending(frames, size, self.backend.submit(batch))
        self._waiting.append(pending)
        return pending

    def _tiled(self, group: Pending) -> list[np.ndarray]:
        """Frames too large for the memory budget: the light map applied tile by tile, or (for ``scale`` and
        temporal smoothing, which need it whole) the whole light map computed in tiles and finished as usual."""
        assert self.tiling is not None and group.tile is not None and group.network_frames is not None
        if group.network_frames is group.frames and self.smoother is None:
            return [self.tiling.enhance(frame, group.tile, self.on_tile) for frame in group.frames]
        light_maps = [self.tiling.light_map(frame, group.tile, self.on_tile) for frame in group.network_frames]
        return self._finish(group.frames, group.network_size, {"light_map": np.stack(light_maps)[:, None]})

    def _finish(
        self, frames: list[np.ndarray], network_size: tuple[int, int], outputs: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        if self.io == "uint8":
            return list(outputs["enhanced"])
        full_size = network_size == (frames[0].shape[1], frames[0].shape[0])
        if full_size and self.smoother is None and "enhanced" in outputs:
            return [to_uint8(enhanced[::-1].transpose(1, 2, 0)) for enhanced in outputs["enhanced"]]
        results = []
        for frame, light_map in zip(frames, outputs["light_map"][:, 0], strict=True):
            if self.smoother is not None:
                light_map = self.smoother.update(light_map, frame)
            light_map = upsample_light_map(light_map, frame, self.upsample)
            results.append(apply_light_map_bgr8(frame, light_map))
        return results


def _checked_dtype(frame: np.ndarray, index: int) -> np.ndarray:
    """The frame if its pixel type is 8- or 16-bit unsigned; anything else is an error that says how to convert."""
    frame = np.asarray(frame)
    if frame.dtype in (np.uint8, np.uint16):
        return frame
    raise CliplitError(
        f"frame {index} has pixel type {frame.dtype}; the enhancer takes uint8 BGR frames (0..255, as OpenCV and "
        "video decoders give them) or uint16. Convert floats first, e.g. np.clip(frame * 255 + 0.5, 0, 255)"
        ".astype(np.uint8) for values in [0, 1], or np.clip(frame + 0.5, 0, 255).astype(np.uint8) for 0..255"
    )


@dataclass(eq=False)
class Pending:
    """Frames of one size on their way through the backend, with the backend's handle for them (and the outputs,
    once fetched early to free a backend slot)."""

    frames: list[np.ndarray]
    network_size: tuple[int, int]
    handle: object
    outputs: dict[str, np.ndarray] | None = None
    #: set for frames that run tiled (then ``handle`` is None): the tile size, and the frames at network size
    tile: tuple[int, int] | None = None
    network_frames: list[np.ndarray] | None = None
    #: set for frames on the student's fast path (then ``handle`` is None): its enhanced frames, when done
    fast: Future[list[np.ndarray]] | None = None
