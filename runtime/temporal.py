"""Temporal smoothing of the light map, for ``--temporal-smoothing A``: a motion-gated moving average.

Frame by frame, the network's light map also reacts to changes elsewhere in the picture (its pyramid pooling sees the
whole frame): a dark figure walking through makes the untouched background pump. An exponential moving average
``L_t = w·L_{t-1} + (1-w)·L_new`` calms that, but a plain one (w = A everywhere) was measured to make things worse
wherever the picture moves: the light map of a moved object lingers where it was (a trail), a pan drags yesterday's
light map over today's picture, and exposure flicker, which the network already partly compensates, stops being
compensated. So the weight is gated by motion: w = A where the pixel's (5×5-averaged) grey level did not change and
falls linearly to 0 at a change of ``MOTION_LEVELS``; changed regions take the new light map at once.

The average also restarts on a change of frame size and on a scene cut, detected on tiny grey thumbnails normalised
to zero mean and unit variance (a global brightness change is not a cut, a change of content is). Measurements are
in docs/runtime.md.
"""

from __future__ import annotations

import cv2
import numpy as np

#: mean absolute difference of consecutive normalised thumbnails above which a frame starts a new scene; measured
#: on clips panning across the released photos, cuts between them scored 0.61-1.48 and fast pans within one up to
#: 0.84 (95% below 0.54): a false cut only restarts the average, a missed one would blend two scenes
SCENE_CUT_THRESHOLD = 0.6
#: grey-level change (0-255) at which a pixel counts as moving and stops being averaged (12 measured better than 24)
MOTION_LEVELS = 12.0
_THUMBNAIL_SIZE = (32, 18)


class LightMapSmoother:
    """Motion-gated exponential moving average of light maps across frames, reset on scene cuts."""

    def __init__(self, strength: float, scene_cut_threshold: float = SCENE_CUT_THRESHOLD) -> None:
        """``strength`` A in [0, 1): the weight of the past where nothing moves (0 turns smoothing off)."""
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"temporal smoothing must be in [0, 1), got {strength}")
        self.strength = strength
        self.scene_cut_threshold = scene_cut_threshold
        self.cuts = 0
        self._average: np.ndarray | None = None
        self._thumbnail: np.ndarray | None = None
        self._grey: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past, e.g. before an unrelated clip."""
        self._average = None
        self._thumbnail = None
        self._grey = None

    def update(self, light_map: np.ndarray, frame_bgr: np.ndarray) -> np.ndarray:
        """Fold the newest light map (any 2-D shape) of ``frame_bgr`` into the average and return the average."""
        thumbnail = normalised_thumbnail(frame_bgr)
        fresh = self._average is None or self._average.shape != light_map.shape
        if not fresh and scene_change(self._thumbnail, thumbnail) > self.scene_cut_threshold:
            self.cuts += 1
            fresh = True
        grey = _grey_at(frame_bgr, light_map.shape)
        if fresh:
            self._average = light_map.astype(np.float32, copy=True)
        else:
            change = cv2.blur(np.abs(grey - self._grey), (5, 5))
            weight = self.strength * np.clip(1.0 - change / MOTION_LEVELS, 0.0, 1.0)
            self._average = weight * self._average + (1.0 - weight) * light_map
        self._thumbnail = thumbnail
        self._grey = grey
        return self._average


def _grey_at(frame_bgr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The frame's grey levels at the light map's resolution, as float32."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, shape[::-1], interpolation=cv2.INTER_AREA).astype(np.float32)


def normalised_thumbnail(frame_bgr: np.ndarray) -> np.ndarray:
    """A 32×18 grey thumbnail with zero mean and unit variance (a flat frame stays all zeros)."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, _THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
    small -= small.mean()
    spread = small.std()
    return small / spread if spread > 1e-3 else small


def scene_change(previous: np.ndarray, current: np.ndarray) -> float:
    """How different two normalised thumbnails are: 0 for the same picture, about 1.1 for unrelated ones."""
    return float(np.mean(np.abs(previous - current)))
