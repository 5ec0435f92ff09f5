"""Temporal smoothing of the light map, for ``--temporal-smoothing A``.

Run frame by frame, the network's light map reacts to every small change of the picture (noise, motion, a person
walking through), and since the output divides by it, the whole frame's brightness pumps. An exponential moving
average ``L_t = A·L_{t-1} + (1-A)·L_new`` calms that down. Two things reset the average, so it never blends
unrelated pictures: a change of frame size, and a scene cut. A cut is detected on tiny grey thumbnails normalised to
zero mean and unit variance, so a global brightness change (exposure flicker, which the average should smooth)
does not count as a cut while a change of content does. Measurements are in docs/runtime.md.
"""

from __future__ import annotations

import cv2
import numpy as np

#: mean absolute difference of consecutive normalised thumbnails above which a frame starts a new scene
SCENE_CUT_THRESHOLD = 0.5
_THUMBNAIL_SIZE = (32, 18)


class LightMapSmoother:
    """Exponential moving average of light maps across frames, reset on scene cuts."""

    def __init__(self, strength: float, scene_cut_threshold: float = SCENE_CUT_THRESHOLD) -> None:
        """``strength`` A in [0, 1): the weight of the past (0 turns smoothing off)."""
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"temporal smoothing must be in [0, 1), got {strength}")
        self.strength = strength
        self.scene_cut_threshold = scene_cut_threshold
        self.cuts = 0
        self._average: np.ndarray | None = None
        self._thumbnail: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past, e.g. before an unrelated clip."""
        self._average = None
        self._thumbnail = None

    def update(self, light_map: np.ndarray, frame_bgr: np.ndarray) -> np.ndarray:
        """Fold the newest light map (any 2-D shape) of ``frame_bgr`` into the average and return the average."""
        thumbnail = normalised_thumbnail(frame_bgr)
        fresh = self._average is None or self._average.shape != light_map.shape
        if not fresh and scene_change(self._thumbnail, thumbnail) > self.scene_cut_threshold:
            self.cuts += 1
            fresh = True
        if fresh:
            self._average = light_map.astype(np.float32, copy=True)
        else:
            self._average = cv2.addWeighted(self._average, self.strength, light_map, 1.0 - self.strength, 0.0)
        self._thumbnail = thumbnail
        return self._average


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
