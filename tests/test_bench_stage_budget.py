"""The per-stage CPU budget of the student's video pipeline (cliplit.benchmarks.stage_budget): every stage measured
on a tiny pan over real photos, on each engine with a fast path, and the ceiling it implies computed from them.

Bookkeeping only; what the stages cost is the benchmark's business (docs/distill.md), not a timed test's.
"""

from __future__ import annotations

import json

import pytest
from conftest import SHARED

from cliplit.benchmarks.stage_budget import PIPELINE, main

PHOTOS = SHARED.parent / "photos"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_every_stage_is_measured_and_the_ceiling_follows_from_them(backend, tmp_path, capsys):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install 'cliplit[openvino]')")
    out = tmp_path / "out"
    assert (
        main(["--photos", str(PHOTOS), "--out", str(out), "--sizes", "96x64", "--frames", "6", "--backend", backend])
        == 0
    )
    size = json.loads((out / "results.json").read_text())["sizes"]["96x64"]
    stages = {stage["name"]: stage for stage in size["stages"]}
    assert len(stages) == 8 and all(stage["cpu_ms"] > 0 and stage["wall_ms"] > 0 for stage in stages.values())
    assert any(backend in name for name in stages if name.startswith("coefficients network"))
    pipeline = [stage["cpu_ms"] for name, stage in stages.items() if name.startswith(PIPELINE)]
    assert len(pipeline) == len(PIPELINE)
    assert size["pipeline_cpu_ms"] == pytest.approx(sum(pipeline))
    assert size["ceiling_ratio"] == pytest.approx(size["stages"][0]["cpu_ms"] / sum(pipeline))
    assert (
        "CPU-bound ceiling" in (out / "results.md").read_text() and "| decode (threaded) |" in capsys.readouterr().out
    )


def test_a_backend_without_a_fast_path_is_a_one_line_error(tmp_path, capsys):
    argv = ["--photos", str(PHOTOS), "--out", str(tmp_path), "--sizes", "96x64", "--frames", "2", "--backend", "torch"]
    assert main(argv) == 2
    assert "has no student fast path to measure" in capsys.readouterr().err
