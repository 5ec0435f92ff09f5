"""Frame sizes and batch sizes of a benchmark run, parsed from the command line.

Sizes are named the way video people name them (``720p`` is 1280 wide and 720 high) or given as ``WxH``; results
always record the resolved width and height so a table never depends on what a preset meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cliplit.core.contract import MIN_SIDE
from cliplit.core.errors import CliplitError

PRESETS: dict[str, tuple[int, int]] = {
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
    "1440p": (2560, 1440),
    "2160p": (3840, 2160),
    "4k": (3840, 2160),
}

_WXH = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True, order=True)
class FrameSize:
    """One frame size; ``label`` is what the user asked for (``720p`` or ``640x360``)."""

    pixels: int
    width: int
    height: int
    label: str

    @classmethod
    def of(cls, width: int, height: int, label: str | None = None) -> FrameSize:
        if width < MIN_SIDE or height < MIN_SIDE:
            raise CliplitError(
                f"frame size {width}x{height} is too small: CLIP-LIT needs at least {MIN_SIDE}x{MIN_SIDE}"
            )
        return cls(width * height, width, height, label or f"{width}x{height}")

    @property
    def wxh(self) -> str:
        return f"{self.width}x{self.height}"


def parse_size(text: str) -> FrameSize:
    """``480p``/``720p``/``1080p``/``1440p``/``2160p``/``4k`` or ``WxH`` (width first, as ffmpeg writes it)."""
    key = text.strip().lower()
    if key in PRESETS:
        return FrameSize.of(*PRESETS[key], label=key)
    match = _WXH.match(key)
    if not match:
        raise CliplitError(f"unknown size {text!r}: use {', '.join(PRESETS)} or WIDTHxHEIGHT such as 640x360")
    return FrameSize.of(int(match.group(1)), int(match.group(2)))


def parse_sizes(text: str) -> list[FrameSize]:
    """A comma-separated list of sizes, smallest first, without duplicates."""
    sizes = {parse_size(part) for part in text.split(",") if part.strip()}
    if not sizes:
        raise CliplitError("--sizes is empty")
    return sorted(sizes)


def parse_positive_ints(text: str, option: str) -> list[int]:
    """A comma-separated list of positive integers (``--batch 1,4``), sorted, without duplicates."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise CliplitError(f"{option} takes positive integers separated by commas, not {text!r}") from None
    if not values or values[0] < 1:
        raise CliplitError(f"{option} takes positive integers separated by commas, not {text!r}")
    return values


def parse_scales(text: str) -> list[float]:
    """``--scale 0.5,0.25``: the runtime's light-map scales, each in (0, 1]."""
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()}, reverse=True)
    except ValueError:
        raise CliplitError(f"--scale takes numbers in (0, 1] separated by commas, not {text!r}") from None
    if not values or not all(0.0 < value <= 1.0 for value in values):
        raise CliplitError(f"--scale takes numbers in (0, 1] separated by commas, not {text!r}")
    return values
