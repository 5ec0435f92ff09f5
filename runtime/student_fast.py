"""The student's fast path on the CPU: its 1/4-resolution network on the backend's engine, the rest in OpenCV passes.

``clip-lit-rt`` (``cliplit.train.student``) computes ``log L = a * luma + b`` at full resolution from two coefficient
maps ``a``, ``b`` predicted at 1/4 resolution, and outputs ``clamp(x / L, 0, 1)``. As one ONNX graph, ONNX Runtime
runs the full-resolution part as a dozen separate float passes (two upsamplings, the luma, the affine model, ``exp``,
the division, the clamp, layout reorders), plus the NumPy conversions around the model (uint8 BGR HWC ⇄ float RGB
NCHW): more time than the network itself. Here:

1. the frame is average-pooled 4×4 exactly as the network's ``ceil_mode`` pooling does (partial windows at the right
   and bottom average the pixels they have), from its uint8 levels, with no float copy of the frame
   (:func:`pooled_frame`);
2. the coefficients graph (:func:`cliplit.core.graphs.build_coefficients`: the student's own graph from the pooled
   frame on, built from the same weights) runs at 1/4 resolution on the backend's engine (ONNX Runtime or OpenVINO
   on the CPU: ``Backend.open_coefficients``);
3. a few OpenCV passes over the uint8 BGR frame apply them (:func:`apply_coefficients`): ``x / exp(a·luma + b)``
   is ``x · exp(-a/765 · (R+G+B) - b)``, so the maps are negated and scaled at 1/4 resolution, upsampled with
   ``cv2.resize`` (INTER_LINEAR on float maps is the half-pixel bilinear of ``align_corners=False``), the channel
   sum is one ``cv2.transform`` of the frame in float, the affine model one ``cv2.accumulateProduct``, then
   ``cv2.exp`` and one saturating ``cv2.multiply`` into uint8 (no division, no clamp pass: saturation is the
   clamp). Each is a SIMD, multi-threaded pass over one float plane; OpenCV is already a dependency, where a
   compiled kernel (numba) would add llvmlite, about 60 MB, to a base install capped at 600 MB, and a plain fused
   loop is bound by its scalar ``exp`` (18.5 ms per 1080p frame on one thread, measured before this was written).

The result equals the whole ONNX model's, rounded as the contract rounds, within one 8-bit level (float rounding
of the same operations in another order; the contract's ``max(L, 1e-6)`` guard only changes values that saturate
at 255 either way). The whole model stays the fallback and the export for other hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np

from cliplit.runtime.backends.base import CoefficientsRunner

POOL = 4  # the student's pooling factor (cliplit.train.student.POOL)
#: frames the fast path works on at once: the next frame's 1/4-resolution network runs while this one's
#: full-resolution pass does (the network leaves cores idle between its small operators)
OVERLAP = 2
_CHANNEL_SUM = np.ones((1, 3), np.float32)  # cv2.transform's matrix: B + G + R
STRIP_ROWS = 64  # rows of the full-resolution pass at a time (32–128 measured; 64 best at 1080p)


def pooled_frame(frame: np.ndarray) -> np.ndarray:
    """The H×W×3 uint8 frame average-pooled 4×4 with ``ceil_mode`` (``ceil(H/4)×ceil(W/4)×3`` float32 in [0, 1],
    same channel order): exact integer sums of each window divided by its pixel count, as ``avg_pool2d(4, 4,
    ceil_mode=True, count_include_pad=False)`` computes on ``frame / 255``."""
    height, width = frame.shape[:2]
    rows = frame[0::POOL].astype(np.uint16)  # ≤ 16 × 255 fits in 16 bits
    for offset in range(1, POOL):
        part = frame[offset::POOL]
        rows[: len(part)] += part
    sums = rows[:, 0::POOL].copy()
    for offset in range(1, POOL):
        part = rows[:, offset::POOL]
        sums[:, : part.shape[1]] += part
    row_counts = np.minimum(POOL, height - POOL * np.arange(sums.shape[0]))
    column_counts = np.minimum(POOL, width - POOL * np.arange(sums.shape[1]))
    scale = 1.0 / (255.0 * row_counts[:, None, None] * column_counts[None, :, None])
    return np.multiply(sums, scale.astype(np.float32), dtype=np.float32)


def pooled_batch(frames: Sequence[np.ndarray]) -> np.ndarray:
    """N uint8 BGR frames of one size as the coefficients graph's input: pooled (:func:`pooled_frame`), in its RGB
    order and N×3×h×w layout."""
    pooled = np.stack([pooled_frame(frame) for frame in frames])[..., ::-1]  # BGR → the graph's RGB
    return np.ascontiguousarray(pooled.transpose(0, 3, 1, 2))


def apply_coefficients(frame: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """The enhanced H×W×3 uint8 frame from ``coefficients`` (2×h×w: slope and offset of the log light map in the
    luma, at 1/4 resolution): ``x · exp(-(a·luma + b))`` rounded and saturated to uint8, in OpenCV passes.

    The maps are upsampled whole (a strip of a bilinear upsampling is not the upsampling of a strip); the rest runs in
    strips of ``STRIP_ROWS`` rows, so its float planes stay in the CPU's cache instead of streaming a 25 MB float copy
    of a 1080p frame through memory five times: 5.2–7.0 against 16.5–16.8 CPU-ms per 720p frame, 13.6–18.9 against
    33.8–34.2 at 1080p (2-core AMD EPYC, medians, interleaved, a held-out photo with clip-lit-rt's coefficients)."""
    height, width = frame.shape[:2]
    slope = np.multiply(coefficients[0], np.float32(-1.0 / (3.0 * 255.0)), dtype=np.float32)  # luma = sum / 765
    offset = np.negative(coefficients[1], dtype=np.float32)
    slope = cv2.resize(slope, (width, height), interpolation=cv2.INTER_LINEAR)
    log_gain = cv2.resize(offset, (width, height), interpolation=cv2.INTER_LINEAR)
    enhanced = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, STRIP_ROWS):
        rows = slice(top, top + STRIP_ROWS)
        strip = np.ascontiguousarray(frame[rows])
        channel_sum = cv2.transform(strip.astype(np.float32), _CHANNEL_SUM)  # (cv2.reduce over 3 columns: 15× slower)
        gain = log_gain[rows]
        cv2.accumulateProduct(slope[rows], channel_sum, gain)
        cv2.exp(gain, dst=gain)
        # the gain on all three channels: cvtColor copies a plane to three in half the time of cv2.merge
        cv2.multiply(strip, cv2.cvtColor(gain, cv2.COLOR_GRAY2BGR), dst=enhanced[rows], dtype=cv2.CV_8U)
    return enhanced


class StudentFast:
    """A student's coefficients graph on a backend's engine, and the passes around it; ``submit`` runs frames on
    ``OVERLAP`` worker threads (the engines and OpenCV release the GIL)."""

    def __init__(self, runner: CoefficientsRunner) -> None:
        self.runner = runner  # from Backend.open_coefficients: the backend's engine, threads and precision
        self._workers: ThreadPoolExecutor | None = None

    def coefficients(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """N×2×h×w coefficient maps of N frames of one size."""
        return self.runner(pooled_batch(frames))

    def enhance(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Enhanced uint8 BGR frames of N uint8 BGR frames of one size."""
        maps = self.coefficients(frames)
        return [apply_coefficients(frame, coefficients) for frame, coefficients in zip(frames, maps, strict=True)]

    def submit(self, frames: Sequence[np.ndarray]) -> Future[list[np.ndarray]]:
        """Start :meth:`enhance` on a worker thread; the future gives its frames (or raises its error)."""
        if self._workers is None:
            self._workers = ThreadPoolExecutor(OVERLAP, thread_name_prefix="cliplit-student-fast")
        return self._workers.submit(self.enhance, list(frames))

    def close(self) -> None:
        """Let submitted frames finish, then stop the worker threads."""
        if self._workers is not None:
            self._workers.shutdown(wait=True)
            self._workers = None
