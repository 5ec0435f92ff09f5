"""The one verification skeleton of every export: cases, a reference, tolerances that say why, one report.

Each exporter checks what it wrote before it is renamed into place: the ONNX export against PyTorch
(:mod:`cliplit.export.onnx_export`), the static OpenCV model against the dynamic export
(:mod:`cliplit.export.opencv_static`), a TensorRT engine against ONNX Runtime FP32 (:mod:`cliplit.export.parity`).
All of them state their inputs as :class:`Case` lists, run the model under test and its reference on each, measure
each output against a :class:`Tolerance` with :func:`compare`, and hand back the resulting :class:`Check` tuple (the
exports inside an immutable :class:`ExportReport`). ONNX Runtime sessions come from
:func:`cliplit.core.ort_session.cpu_session`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cliplit.core.contract import MIN_SIDE, io_spec, model_input_from_rgb, random_model_input
from cliplit.core.errors import CliplitError
from cliplit.core.metrics import psnr
from cliplit.core.ort_session import cpu_session

#: a model as the skeleton sees it: its input array → its outputs by name
Model = Callable[[np.ndarray], Mapping[str, np.ndarray]]

# Odd sizes that exercise uneven pooling bins, the minimum size and non-square frames.
VERIFY_SIZES: tuple[tuple[int, int], ...] = ((MIN_SIDE, MIN_SIDE), (7, 9), (67, 93), (257, 383))
VERIFY_SEED = 1234
VERIFY_BATCH = 2  # a batch of two catches a graph that mixes up frames


@dataclass(frozen=True)
class Tolerance:
    """How far an output may be from its reference: at most ``bound`` of max |difference|, or (``psnr_peak`` set) at
    least ``bound`` dB of PSNR with that peak; ``why`` says where the bound comes from."""

    bound: float
    why: str
    psnr_peak: float | None = None

    def measure(self, ours: np.ndarray, reference: np.ndarray) -> float:
        if self.psnr_peak is not None:
            return psnr(reference, ours, peak=self.psnr_peak)
        return float(np.abs(ours.astype(np.float64) - reference.astype(np.float64)).max())

    def passes(self, value: float) -> bool:
        return value >= self.bound if self.psnr_peak is not None else value <= self.bound

    def describe(self, value: float) -> str:
        if self.psnr_peak is not None:
            return f"PSNR {value:.1f} dB < {self.bound:.0f} dB"
        return f"max |difference| = {value:.3g} > {self.bound}"


LIGHT_MAP = Tolerance(
    1e-4,
    "ONNX Runtime and PyTorch agree to ~1e-7 in FP32 (different summation orders); 1e-4 leaves room for other CPUs' "
    "kernels while still catching any real graph error (those show up at 1e-2 and above)",
)
ENHANCED_FLOAT = Tolerance(
    1e-3, "x / L amplifies the light map's error where L is small; a quarter of one 8-bit level is still invisible"
)
ENHANCED_UINT8 = Tolerance(1.0, "a value within float rounding of a .5 boundary can round either way: one level")


def output_tolerances(io: str) -> dict[str, Tolerance]:
    """The tolerance of each output of an ``io`` model against a reference computing the same in FP32."""
    return {"light_map": LIGHT_MAP, "enhanced": ENHANCED_FLOAT if io == "float" else ENHANCED_UINT8}


@dataclass(frozen=True)
class Case:
    """One verification input: ``array`` in the model's input layout, named by ``label`` in reports and errors."""

    label: str
    array: np.ndarray


def random_cases(io: str, sizes: Sequence[tuple[int, int]] = VERIFY_SIZES, seed: int = VERIFY_SEED) -> list[Case]:
    """Seeded random inputs of an ``io`` model, a batch of ``VERIFY_BATCH`` at each (height, width) of ``sizes``."""
    rng = np.random.default_rng(seed)
    return [Case(f"random {h}x{w}", random_model_input(io, VERIFY_BATCH, h, w, rng)) for h, w in sizes]


def image_cases(io: str, images: Sequence[np.ndarray]) -> list[Case]:
    """Real photos (RGB uint8 H×W×3) as inputs of an ``io`` model: what random noise cannot show."""
    return [
        Case(f"image {i} {rgb.shape[1]}x{rgb.shape[0]}", model_input_from_rgb(io, rgb)) for i, rgb in enumerate(images)
    ]


@dataclass(frozen=True)
class Check:
    """What one case measured on one output against the reference, and the tolerance it was held to."""

    case: str
    output: str
    value: float
    tolerance: Tolerance

    @property
    def passed(self) -> bool:
        return self.tolerance.passes(self.value)


def compare(
    cases: Iterable[Case], model: Model, reference: Model, tolerances: Mapping[str, Tolerance]
) -> tuple[Check, ...]:
    """Run ``model`` and ``reference`` on every case and measure every output both have that ``tolerances`` names."""
    checks = []
    for case in cases:
        ours, theirs = model(case.array), reference(case.array)
        for name, tolerance in tolerances.items():
            if name in ours and name in theirs:
                checks.append(Check(case.label, name, tolerance.measure(ours[name], theirs[name]), tolerance))
    return tuple(checks)


def require(checks: Iterable[Check], what: str) -> tuple[Check, ...]:
    """``checks``, or a ``CliplitError`` naming the first that failed (``what`` names the comparison)."""
    checks = tuple(checks)
    for check in checks:
        if not check.passed:
            raise CliplitError(
                f"{what} failed verification on {check.case}: {check.tolerance.describe(check.value)} in {check.output}"
            )
    return checks


def onnx_runtime(model: str | os.PathLike[str]) -> Model:
    """The ONNX file ``model`` run by ONNX Runtime on the CPU: every output, by name."""
    session = cpu_session(model)
    input_name = session.get_inputs()[0].name
    names = [output.name for output in session.get_outputs()]
    return lambda array: dict(zip(names, session.run(names, {input_name: array}), strict=True))


def reported_output(outputs: Sequence[str]) -> str:
    """The output whose difference a report shows: the light map where there is one (it is what the network computes;
    the enhanced image only amplifies its error), else the enhanced image."""
    return "light_map" if "light_map" in outputs else "enhanced"


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote (``path``, I/O variant, opset, outputs: None for all of the variant's) and every check it
    passed; immutable: a later step (the static OpenCV model) makes a new report with :meth:`moved`."""

    path: Path
    io: str
    opset: int
    checks: tuple[Check, ...] = ()
    outputs: tuple[str, ...] | None = None

    @property
    def max_abs_diff(self) -> dict[str, float]:
        """The measured difference per case, of the output the report shows (see :func:`reported_output`)."""
        shown = reported_output(io_spec(self.io, self.outputs).output_names)
        return {check.case: check.value for check in self.checks if check.output == shown}

    def moved(self, path: str | os.PathLike[str], checks: Iterable[Check] = ()) -> ExportReport:
        """This report for the model now at ``path``, with ``checks`` added."""
        return replace(self, path=Path(path), checks=(*self.checks, *checks))

    def summary(self) -> str:
        worst = max(self.max_abs_diff.values(), default=float("nan"))
        outputs = io_spec(self.io, self.outputs).output_names
        unit = "uint8 levels" if self.io != "float" else reported_output(outputs).replace("_", " ")
        only = "" if self.outputs is None else f", outputs={','.join(outputs)}"
        return (
            f"wrote {self.path} (io={self.io}{only}, opset={self.opset}); max |ONNX Runtime - PyTorch| = {worst:.3g} "
            f"{unit}"
        )
