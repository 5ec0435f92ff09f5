"""Optimization-profile options: parsing in each I/O layout, defaults, and the errors users see."""

from __future__ import annotations

import pytest

from cliplit.core.contract import MIN_SIDE
from cliplit.core.errors import CliplitError
from cliplit.core.shapes import ProfileShapes, parse_shape, profile_from_args


def test_parses_both_layouts() -> None:
    assert parse_shape("1x3x1080x1920", "float", "--opt-shape") == (1, 3, 1080, 1920)
    assert parse_shape(" 2X720x1280x3 ", "uint8", "--opt-shape") == (2, 720, 1280, 3)
    assert parse_shape("1×3×64×64", "float", "--min-shape") == (1, 3, 64, 64)


@pytest.mark.parametrize(
    ("text", "io", "message"),
    [
        ("1x3x64", "float", "expected four dimensions"),
        ("1x3x64xabc", "float", "expected four dimensions"),
        ("", "float", "expected four dimensions"),
        ("1x3x64x64", "uint8", "did you mean 1x64x64x3?"),
        ("1x64x64x3", "float", "did you mean 1x3x64x64?"),
        ("1x4x64x64", "float", "must be 3 colour channels"),
        ("0x3x64x64", "float", "batch size must be at least 1"),
        (f"1x3x{MIN_SIDE - 1}x64", "float", f"at least {MIN_SIDE}x{MIN_SIDE}"),
        (f"1x64x{MIN_SIDE - 1}x3", "uint8", f"at least {MIN_SIDE}x{MIN_SIDE}"),
    ],
)
def test_rejects_bad_shapes_naming_the_option(text: str, io: str, message: str) -> None:
    with pytest.raises(CliplitError, match="--max-shape") as caught:
        parse_shape(text, io, "--max-shape")
    assert message in str(caught.value)


def test_defaults_cover_720p_to_4k_and_tune_for_1080p() -> None:
    profile = profile_from_args("float", None, None, None)
    assert profile == ProfileShapes("float", (1, 3, 64, 64), (1, 3, 1080, 1920), (1, 3, 2160, 3840))
    assert profile.contains((1, 3, 720, 1280)) and profile.contains((1, 3, 2160, 3840))
    assert not profile.contains((1, 3, 3840, 2160))  # portrait 4K needs its own --max-shape
    uint8 = profile_from_args("uint8", None, None, None)
    assert (uint8.min, uint8.opt, uint8.max) == ((1, 64, 64, 3), (1, 1080, 1920, 3), (1, 2160, 3840, 3))


def test_defaults_move_inside_explicit_bounds() -> None:
    small = profile_from_args("float", None, None, "1x3x720x1280")
    assert (small.min, small.opt, small.max) == ((1, 3, 64, 64), (1, 3, 720, 1280), (1, 3, 720, 1280))
    tiny = profile_from_args("float", None, None, "1x3x32x48")
    assert tiny.min == (1, 3, 32, 48) and tiny.opt == (1, 3, 32, 48)
    big = profile_from_args("uint8", None, "4x2160x4096x3", None)
    assert big.min == (1, 64, 64, 3) and big.max == (4, 2160, 4096, 3)
    high_min = profile_from_args("float", "1x3x3000x5000", None, None)
    assert high_min.opt == (1, 3, 3000, 5000) and high_min.max == (1, 3, 3000, 5000)


@pytest.mark.parametrize(
    ("low", "opt", "high", "message"),
    [
        ("1x3x128x128", "1x3x64x64", None, "--min-shape 1x3x128x128 is larger than --opt-shape"),
        (None, "1x3x1080x1920", "1x3x720x1280", "--opt-shape 1x3x1080x1920 is larger than --max-shape"),
        ("2x3x64x64", None, "1x3x720x1280", "--min-shape 2x3x64x64 is larger than --max-shape"),
    ],
)
def test_explicit_shapes_must_be_ordered(low: str | None, opt: str | None, high: str | None, message: str) -> None:
    with pytest.raises(CliplitError, match="min ≤ opt ≤ max") as caught:
        profile_from_args("float", low, opt, high)
    assert message in str(caught.value)


def test_describe_and_as_dict() -> None:
    profile = profile_from_args("uint8", "1x64x64x3", "1x720x1280x3", "1x1080x1920x3")
    assert profile.describe() == "min 1x64x64x3, opt 1x720x1280x3, max 1x1080x1920x3"
    assert profile.as_dict() == {"min": [1, 64, 64, 3], "opt": [1, 720, 1280, 3], "max": [1, 1080, 1920, 3]}
