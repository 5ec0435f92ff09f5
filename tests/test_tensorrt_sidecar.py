"""The engine sidecar: JSON round trip, atomic writing, and the compatibility checks made before deserializing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from cliplit.core.atomic import OutputExistsError
from cliplit.core.errors import CliplitError
from cliplit.core.sidecar import EngineSidecar, check_compatible, read_sidecar, sidecar_path, write_sidecar


def make_sidecar(**changes: object) -> EngineSidecar:
    sidecar = EngineSidecar(
        io="float",
        input_name="image",
        profile={"min": [1, 3, 64, 64], "opt": [1, 3, 1080, 1920], "max": [1, 3, 2160, 3840]},
        precision="fp16",
        fp16_method="strongly-typed-onnx",
        tensorrt_version="11.0.0.5",
        gpu_name="NVIDIA L4",
        compute_capability="8.9",
        onnx_sha256="ab" * 32,
        version_compatible=False,
        cliplit_version="0.1.0",
        workspace_gib=4.0,
        parity_psnr_db=52.25,
        parity=[{"input": "photo.jpg at 1920x1080", "psnr_db": 52.25}],
    )
    return replace(sidecar, **changes)


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    sidecar = make_sidecar()
    path = write_sidecar(engine, sidecar, overwrite=False)
    assert path == tmp_path / "model.engine.json" == sidecar_path(engine)
    data = json.loads(path.read_text())
    assert data["format"] == "cliplit-tensorrt-engine" and data["tensorrt_version"] == "11.0.0.5"
    assert read_sidecar(engine) == sidecar
    assert [p.name for p in tmp_path.iterdir()] == ["model.engine.json"]  # no temporary file left behind


def test_identical_outputs_store_infinity_as_text(tmp_path: Path) -> None:
    engine = tmp_path / "e.engine"
    write_sidecar(
        engine, make_sidecar(parity_psnr_db=math.inf, parity=[{"input": "x", "psnr_db": math.inf}]), overwrite=False
    )
    assert json.loads(sidecar_path(engine).read_text())["parity_psnr_db"] == "inf"
    assert read_sidecar(engine).parity_psnr_db == math.inf
    assert read_sidecar(engine).parity == [{"input": "x", "psnr_db": math.inf}]


def test_never_overwrites_without_permission(tmp_path: Path) -> None:
    engine = tmp_path / "e.engine"
    write_sidecar(engine, make_sidecar(), overwrite=False)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_sidecar(engine, make_sidecar(gpu_name="other"), overwrite=False)
    assert read_sidecar(engine).gpu_name == "NVIDIA L4"
    write_sidecar(engine, make_sidecar(gpu_name="other"), overwrite=True)
    assert read_sidecar(engine).gpu_name == "other"


def test_missing_sidecar_is_none(tmp_path: Path) -> None:
    assert read_sidecar(tmp_path / "trtexec.engine") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a cliplit engine sidecar"),
        ('{"format": "cliplit-tensorrt-engine", "format_version": 99}', "newer cliplit"),
        ('{"format": "cliplit-tensorrt-engine", "io": "float"}', "lacks cliplit_version, compute_capability"),
    ],
)
def test_unreadable_sidecars_fail_clearly(tmp_path: Path, text: str, message: str) -> None:
    sidecar_path(tmp_path / "e.engine").write_text(text)
    with pytest.raises(CliplitError, match=message):
        read_sidecar(tmp_path / "e.engine")


def check(sidecar: EngineSidecar, *, version: str = "11.0.0.5", module: str = "tensorrt", cc: str = "8.9") -> None:
    check_compatible(
        sidecar,
        engine="m.engine",
        tensorrt_version=version,
        tensorrt_module=module,
        gpu_name="NVIDIA X",
        compute_capability=cc,
    )


def test_same_version_and_gpu_pass() -> None:
    check(make_sidecar())
    check(make_sidecar(version_compatible=True), version="11.2.1.1", module="tensorrt_dispatch")
    check(make_sidecar(version_compatible=True), module="tensorrt_lean")


def test_plain_engines_need_the_exact_tensorrt_version() -> None:
    with pytest.raises(
        CliplitError, match=r"built with TensorRT 11\.0\.0\.5 and only runs on that version.*11\.0\.1\.2"
    ):
        check(make_sidecar(), version="11.0.1.2")
    with pytest.raises(CliplitError, match="--version-compatible"):
        check(make_sidecar(), version="10.9.0.34")


def test_version_compatible_engines_need_the_same_or_newer_tensorrt() -> None:
    check(make_sidecar(version_compatible=True, tensorrt_version="10.9.0.34"), version="11.0.0.5")
    with pytest.raises(CliplitError, match=r"built with TensorRT 11\.0\.0\.5; this is TensorRT 10\.9\.0\.34"):
        check(make_sidecar(version_compatible=True), version="10.9.0.34")


def test_lean_and_dispatch_runtimes_need_a_version_compatible_engine() -> None:
    with pytest.raises(CliplitError, match=r"without --version-compatible.*tensorrt_lean.*full tensorrt package"):
        check(make_sidecar(), module="tensorrt_lean")
    with pytest.raises(CliplitError, match=r"the dispatch runtime \(tensorrt_dispatch\) only runs version-compatible"):
        check(make_sidecar(), module="tensorrt_dispatch")


def test_the_lean_runtime_runs_only_engines_of_its_own_version() -> None:
    """It is the runtime of one version; later versions run the lean runtime the plan embeds (dispatch, full)."""
    with pytest.raises(
        CliplitError, match=r"lean runtime \(tensorrt_lean\) 11\.2\.1\.1 only runs engines built by its own version"
    ) as caught:
        check(make_sidecar(version_compatible=True), version="11.2.1.1", module="tensorrt_lean")
    assert "Install tensorrt_lean 11.0.0.5, or tensorrt_dispatch / the full tensorrt package 11.2.1.1" in str(
        caught.value
    )


def test_engines_are_tied_to_the_gpu_architecture() -> None:
    with pytest.raises(
        CliplitError, match=r"built for NVIDIA L4 \(compute capability 8\.9\).*NVIDIA X \(compute capability 9\.0\)"
    ):
        check(make_sidecar(), cc="9.0")
