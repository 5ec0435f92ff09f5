"""The verification skeleton every export shares (cliplit.export.verify): tolerances in both directions, failures
named, the one report immutable, and one ONNX Runtime session helper outside the runtime."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cliplit.core.errors import CliplitError
from cliplit.core.ort_session import cpu_session
from cliplit.export.verify import (
    ENHANCED_UINT8,
    LIGHT_MAP,
    Case,
    ExportReport,
    Tolerance,
    compare,
    onnx_runtime,
    random_cases,
    require,
)


def _identity_model(path: Path) -> Path:
    """A float model whose ``light_map`` is its ``image`` (enough to exercise sessions and comparisons)."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])
    light_map = helper.make_tensor_value_info("light_map", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["light_map"])], "g", [image], [light_map])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_difference_bound_and_a_psnr_bound_each_fail_on_their_side() -> None:
    ours, reference = np.zeros(4, np.float32), np.full(4, 2e-4, np.float32)
    assert not LIGHT_MAP.passes(LIGHT_MAP.measure(ours, reference))
    assert LIGHT_MAP.passes(LIGHT_MAP.measure(ours, reference / 4))
    parity = Tolerance(40.0, "test", psnr_peak=255.0)
    frame = np.arange(256, dtype=np.uint8)
    assert parity.measure(frame, frame) == math.inf and parity.passes(math.inf)
    assert not parity.passes(parity.measure(frame, np.roll(frame, 1)))
    assert ENHANCED_UINT8.passes(1.0) and not ENHANCED_UINT8.passes(2.0)


def test_compare_measures_only_outputs_both_sides_have_and_require_names_the_failure(tmp_path: Path) -> None:
    model = onnx_runtime(_identity_model(tmp_path / "m.onnx"))
    cases = random_cases("float", sizes=((2, 3), (5, 4)))
    assert [case.array.shape for case in cases] == [(2, 3, 2, 3), (2, 3, 5, 4)]
    same = compare(cases, model, lambda array: {"light_map": array}, {"light_map": LIGHT_MAP, "enhanced": LIGHT_MAP})
    assert [(c.case, c.output, c.value) for c in same] == [
        ("random 2x3", "light_map", 0.0),
        ("random 5x4", "light_map", 0.0),
    ]
    assert require(same, "x") == same
    off = compare(cases, model, lambda array: {"light_map": array + 0.01}, {"light_map": LIGHT_MAP})
    with pytest.raises(
        CliplitError, match=r"^x failed verification on random 2x3: max \|difference\| = 0\.01 > 0\.0001 in light_map$"
    ):
        require(off, "x")


def test_the_report_is_immutable_and_moving_it_adds_checks(tmp_path: Path) -> None:
    first = compare(
        [Case("a", np.zeros((1, 3, 2, 2), np.float32))],
        lambda a: {"light_map": a},
        lambda a: {"light_map": a},
        {"light_map": LIGHT_MAP},
    )
    report = ExportReport(path=tmp_path / "a.onnx", io="float", opset=17, checks=first)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.path = tmp_path / "b.onnx"  # type: ignore[misc]
    moved = report.moved(tmp_path / "b.onnx", first)
    assert (report.path.name, len(report.checks)) == ("a.onnx", 1)
    assert (moved.path.name, len(moved.checks), moved.max_abs_diff) == ("b.onnx", 2, {"a": 0.0})


def test_the_session_helper_refuses_a_missing_file_clearly(tmp_path: Path) -> None:
    with pytest.raises(CliplitError, match="no such ONNX model"):
        cpu_session(tmp_path / "missing.onnx")
    assert cpu_session(_identity_model(tmp_path / "m.onnx")).get_providers() == ["CPUExecutionProvider"]
