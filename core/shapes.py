"""The TensorRT optimization profile: ``--min-shape``/``--opt-shape``/``--max-shape`` parsed and checked.

An engine built from a dynamic ONNX model runs any input shape inside its one profile and nothing outside it, and
TensorRT tunes its kernels for the ``opt`` shape. The defaults cover video from 720p to landscape 4K and tune for
1080p. Shapes are written in the input layout of the model's I/O variant (float: N×3×H×W, uint8: N×H×W×3), so a
float-layout shape given for the uint8 model is caught here, with the right spelling suggested, instead of failing
deep inside the builder. No TensorRT import here: the shapes are checked before anything is exported or built.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliplit.core.contract import MIN_SIDE, io_spec
from cliplit.core.errors import CliplitError

Shape = tuple[int, int, int, int]

# (batch, height, width) of the defaults: small frames and thumbnails, 1080p, landscape 4K UHD.
DEFAULT_MIN = (1, 64, 64)
DEFAULT_OPT = (1, 1080, 1920)
DEFAULT_MAX = (1, 2160, 3840)


@dataclass(frozen=True)
class ProfileShapes:
    """The min/opt/max input shapes of one optimization profile, in the layout of I/O variant ``io``."""

    io: str
    min: Shape
    opt: Shape
    max: Shape

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def describe(self) -> str:
        return f"min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"

    def contains(self, shape: tuple[int, ...]) -> bool:
        """Whether an input of ``shape`` lies inside the profile (every dimension between min and max)."""
        return len(shape) == 4 and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max, strict=True))


def make_shape(io: str, batch: int, height: int, width: int) -> Shape:
    """The input shape of variant ``io`` for a batch of ``batch`` frames of height × width."""
    return (batch, 3, height, width) if io_spec(io).input_layout == "NCHW" else (batch, height, width, 3)


def batch_height_width(io: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(batch, height, width) of an input shape of variant ``io``."""
    if io_spec(io).input_layout == "NCHW":
        return shape[0], shape[2], shape[3]
    return shape[0], shape[1], shape[2]


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def parse_shape(text: str, io: str, option: str) -> Shape:
    """Parse ``text`` such as ``1x3x1080x1920`` as an input shape of variant ``io``; ``option`` names it in errors."""
    spec = io_spec(io)
    parts = text.strip().lower().replace("×", "x").split("x")
    try:
        dims = tuple(int(part) for part in parts)
    except ValueError:
        dims = ()
    example = format_shape(make_shape(io, *DEFAULT_OPT))
    if len(dims) != 4:
        raise CliplitError(
            f"{option} {text!r}: expected four dimensions N×{_layout_letters(io)} such as {example} "
            f"(the {io} model takes {spec.input_layout} input)"
        )
    channel_axis = 1 if spec.input_layout == "NCHW" else 3
    if dims[channel_axis] != 3:
        hint = ""
        if dims[1] == 3 or dims[3] == 3:  # the other layout: suggest the same frame in the right one
            other_hw = (dims[1], dims[2]) if dims[3] == 3 else (dims[2], dims[3])
            hint = f"; did you mean {format_shape(make_shape(io, dims[0], *other_hw))}?"
        raise CliplitError(
            f"{option} {text}: the {io} model takes {spec.input_layout} input ({_layout_letters(io)}), so "
            f"dimension {channel_axis + 1} must be 3 colour channels{hint}"
        )
    batch, height, width = batch_height_width(io, dims)
    if batch < 1:
        raise CliplitError(f"{option} {text}: the batch size must be at least 1")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise CliplitError(f"{option} {text}: frames must be at least {MIN_SIDE}x{MIN_SIDE} pixels")
    return dims


def profile_from_args(io: str, min_text: str | None, opt_text: str | None, max_text: str | None) -> ProfileShapes:
    """The profile from the three options; options left out take the defaults, clamped into the given ones.

    Explicit shapes must satisfy min ≤ opt ≤ max in every dimension. A default is moved inside the explicit bounds
    (``--max-shape 1x3x720x1280`` alone tunes for 720p rather than failing because 1080p exceeds it).
    """
    given = {
        "min": parse_shape(min_text, io, "--min-shape") if min_text else None,
        "opt": parse_shape(opt_text, io, "--opt-shape") if opt_text else None,
        "max": parse_shape(max_text, io, "--max-shape") if max_text else None,
    }
    for low, high in (("min", "opt"), ("opt", "max"), ("min", "max")):
        lo, hi = given[low], given[high]
        if lo is not None and hi is not None and any(a > b for a, b in zip(lo, hi, strict=True)):
            raise CliplitError(
                f"--{low}-shape {format_shape(lo)} is larger than --{high}-shape {format_shape(hi)} in some "
                "dimension; TensorRT needs min ≤ opt ≤ max in every dimension"
            )
    default_max = make_shape(io, *DEFAULT_MAX)
    maximum = given["max"] or _at_least(default_max, given["opt"] or given["min"] or default_max)
    minimum = given["min"] or _at_most(make_shape(io, *DEFAULT_MIN), given["opt"] or maximum)
    optimum = given["opt"] or _at_most(_at_least(make_shape(io, *DEFAULT_OPT), minimum), maximum)
    return ProfileShapes(io=io, min=minimum, opt=optimum, max=maximum)


def _at_least(shape: Shape, bound: Shape) -> Shape:
    return tuple(max(a, b) for a, b in zip(shape, bound, strict=True))


def _at_most(shape: Shape, bound: Shape) -> Shape:
    return tuple(min(a, b) for a, b in zip(shape, bound, strict=True))


def _layout_letters(io: str) -> str:
    return "3×H×W" if io_spec(io).input_layout == "NCHW" else "H×W×3"
