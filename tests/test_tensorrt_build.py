"""The engine build against fake TensorRT 10/11 modules: API call sequences, FP16 gating, caches, parity, failures."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from tensorrt_fakes import GPU_NAME, PHOTO, FakeParser, cudaError_t, exported_onnx, install

from cliplit.core.errors import CliplitError
from cliplit.core.shapes import profile_from_args
from cliplit.core.sidecar import read_sidecar, sidecar_path
from cliplit.export.cli import add_arguments, engine_settings
from cliplit.export.parity import PSNR_THRESHOLD_DB, fit_to_profile, synthetic_backlit
from cliplit.export.tensorrt_build import GIB, BuildSettings, build_engine, source_node

SHAPES = {
    "float": ("1x3x16x16", "1x3x48x64", "1x3x96x128"),
    "uint8": ("1x16x16x3", "1x48x64x3", "1x96x128x3"),
}
BUILD_CALLS = [
    "Logger",
    "Builder",
    "Builder.create_network",
    "OnnxParser",
    "OnnxParser.parse",
    "Builder.create_builder_config",
    "IBuilderConfig.set_memory_pool_limit",
]
PROFILE_AND_BUILD_CALLS = [
    "Builder.create_optimization_profile",
    "IOptimizationProfile.set_shape",
    "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.create_timing_cache",
    "IBuilderConfig.set_timing_cache",
    "Builder.build_serialized_network",
    "IBuilderConfig.get_timing_cache",
]


@pytest.fixture(autouse=True)
def trt_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $CLIPLIT_HOME per test, so default timing caches start empty and are inspectable."""
    home = tmp_path / "home"
    monkeypatch.setenv("CLIPLIT_HOME", str(home))
    return home


def parse_args(tmp_path: Path, onnx_path: Path, io: str, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    low, opt, high = SHAPES[io]
    argv = ["--onnx", str(onnx_path), "--io", io, "--engine", str(tmp_path / "out" / "m.engine")]
    return parser.parse_args([*argv, "--min-shape", low, "--opt-shape", opt, "--max-shape", high, *extra])


def build(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, io: str, *extra: str):
    """What export-engine does after the export: its arguments mapped onto settings, then ``build_engine``."""
    onnx_path = exported_onnx(tmp_path_factory, io)
    args = parse_args(tmp_path, onnx_path, io, *extra)
    return args, build_engine(onnx_path, args.engine, engine_settings(args))


def builder_calls(stack) -> list[tuple[str, tuple]]:
    """The calls up to the end of the build (the parity run on core's engine runner follows)."""
    names = stack.log.names()
    end = names.index("IBuilderConfig.get_timing_cache") + 1
    return [call for call in stack.log[:end] if not call[0].startswith(("cuda", "ILayer"))]


def initializer_types(model: onnx.ModelProto) -> set[int]:
    return {tensor.data_type for tensor in model.graph.initializer}


def test_tensorrt10_fp16_uses_the_builder_flag_and_pins_the_wrapper_to_fp32(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, "10.9.0.34")
    trt = stack.trt
    args, sidecar = build(tmp_path, tmp_path_factory, "float")
    calls = builder_calls(stack)
    expected = [*BUILD_CALLS, "IBuilderConfig.set_flag", "IBuilderConfig.set_flag", *PROFILE_AND_BUILD_CALLS]
    assert [name for name, _ in calls] == expected
    assert calls[2] == ("Builder.create_network", (0,))  # weakly typed
    assert calls[6] == ("IBuilderConfig.set_memory_pool_limit", (trt.MemoryPoolType.WORKSPACE, 4 * GIB))
    assert [args for name, args in calls if name == "IBuilderConfig.set_flag"] == [
        (trt.BuilderFlag.FP16,),
        (trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,),
    ]
    assert stack.log.of("IOptimizationProfile.set_shape") == [
        ("image", (1, 3, 16, 16), (1, 3, 48, 64), (1, 3, 96, 128))
    ]
    assert stack.log.of("IBuilderConfig.set_timing_cache") == [(False,)]  # ignore_mismatch=False
    # the network is parsed from the FP32 model; FP16 comes from the flag
    assert initializer_types(trt.networks[0].model) == {TensorProto.FLOAT}
    pinned = {layer for layer, precision in stack.log.of("ILayer.precision")}
    layers = {layer.name: layer for layer in trt.networks[0].layers}
    # every layer of the final clamp, the division and the final clip, found by the parser's metadata: /Clip_1 has
    # two tensor bounds, so the parser made two layers for it and named the second with a unique suffix
    assert {source_node(layers[name]) for name in pinned} == {"/Clip", "/Div", "/Clip_1"}
    assert len(pinned) == 4 and any(name.startswith("/Clip_1_") for name in pinned)
    helpers = [name for name, layer in layers.items() if source_node(layer) is None]
    assert any(name.startswith("ONNXTRT_Broadcast") for name in helpers) and not pinned & set(helpers)
    assert all(precision == trt.float32 for _, precision in stack.log.of("ILayer.precision"))
    assert {layer for layer, _, dtype in stack.log.of("ILayer.set_output_type") if dtype == trt.float32} == pinned
    assert sidecar.fp16_method == "builder-flag" and sidecar.precision == "fp16"
    assert args.engine.is_file() and read_sidecar(args.engine) == sidecar


def test_tensorrt10_uint8_pins_the_pre_and_post_processing_but_not_the_frame_cast(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, "10.9.0.34")
    build(tmp_path, tmp_path_factory, "uint8")
    pinned = {layer for layer, _ in stack.log.of("ILayer.precision")}
    assert {"/Div", "/Div_1", "/Clip_1", "/Mul", "/Add", "/Floor", "/Clip_2"} <= pinned
    assert "/Cast" not in pinned and "/Cast_1" not in pinned  # uint8 -> float and back: types fixed by the graph
    assert not any(name.startswith("/enhancer/") for name in pinned)
    assert stack.log.of("IOptimizationProfile.set_shape") == [
        ("frame", (1, 16, 16, 3), (1, 48, 64, 3), (1, 96, 128, 3))
    ]


def test_tensorrt11_builds_a_strongly_typed_network_from_the_fp16_onnx(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, "11.0.0.5")
    args, sidecar = build(tmp_path, tmp_path_factory, "float")
    calls = builder_calls(stack)
    assert [name for name, _ in calls] == [*BUILD_CALLS, *PROFILE_AND_BUILD_CALLS]  # no set_flag at all
    assert calls[2] == ("Builder.create_network", (1 << int(stack.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),))
    model = stack.trt.networks[0].model
    assert initializer_types(model) == {TensorProto.FLOAT16}
    io_types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert io_types == {"image": TensorProto.FLOAT, "enhanced": TensorProto.FLOAT, "light_map": TensorProto.FLOAT}
    assert not stack.log.of("ILayer.precision")
    # the fake engine runs that FP16 model, so the parity is the real FP16-vs-FP32 difference (ONNX Runtime CPU)
    assert PSNR_THRESHOLD_DB <= sidecar.parity_psnr_db < math.inf
    assert sidecar.fp16_method == "strongly-typed-onnx"
    assert (sidecar.tensorrt_version, sidecar.gpu_name, sidecar.compute_capability) == ("11.0.0.5", GPU_NAME, "8.9")
    assert sidecar.profile == {"min": [1, 3, 16, 16], "opt": [1, 3, 48, 64], "max": [1, 3, 96, 128]}
    assert sidecar.io == "float" and sidecar.input_name == "image" and not sidecar.version_compatible
    assert sidecar.onnx_sha256 == hashlib.sha256(args.onnx.read_bytes()).hexdigest()
    assert json.loads(sidecar_path(args.engine).read_text())["parity_psnr_db"] == sidecar.parity_psnr_db


@pytest.mark.parametrize("version", ["10.9.0.34", "11.0.0.5"])
def test_no_fp16_builds_fp32_from_the_fp32_onnx(
    version: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, version)
    _, sidecar = build(tmp_path, tmp_path_factory, "uint8", "--no-fp16")
    assert not stack.log.of("IBuilderConfig.set_flag") and not stack.log.of("ILayer.precision")
    assert initializer_types(stack.trt.networks[0].model) == {TensorProto.FLOAT}
    assert (sidecar.precision, sidecar.fp16_method) == ("fp32", None)
    assert sidecar.parity_psnr_db == math.inf  # the fake FP32 engine is ONNX Runtime on the same model


@pytest.mark.parametrize("version", ["10.9.0.34", "11.0.0.5"])
def test_version_compatible_embeds_the_lean_runtime_and_runs_it_as_trusted_host_code(
    version: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, version)
    _, sidecar = build(tmp_path, tmp_path_factory, "float", "--version-compatible", "--no-fp16")
    flag = stack.trt.BuilderFlag
    assert stack.log.of("IBuilderConfig.set_flag") == [(flag.VERSION_COMPATIBLE,)]  # no EXCLUDE_LEAN_RUNTIME
    assert sidecar.version_compatible
    # the parity run deserialized it with host code allowed (the fake runtime refuses embedded code otherwise)
    assert stack.log.of("Runtime.engine_host_code_allowed") == [(True,)]


def test_timing_cache_is_loaded_and_saved_back(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "trt.cache"
    stack = install(monkeypatch, "10.9.0.34")
    build(tmp_path, tmp_path_factory, "float", "--timing-cache", str(cache), "--no-fp16")
    assert stack.log.of("IBuilderConfig.create_timing_cache") == [(b"",)]
    assert cache.read_bytes() == b"FAKECACHE:10.9.0.34:1"
    stack = install(monkeypatch, "10.9.0.34")
    build(tmp_path, tmp_path_factory, "float", "--timing-cache", str(cache), "--no-fp16", "--overwrite")
    assert stack.log.of("IBuilderConfig.create_timing_cache") == [(b"FAKECACHE:10.9.0.34:1",)]
    assert cache.read_bytes() == b"FAKECACHE:10.9.0.34:2"


def test_default_timing_cache_is_per_tensorrt_version_and_gpu(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, trt_home: Path
) -> None:
    install(monkeypatch, "11.0.0.5")
    build(tmp_path, tmp_path_factory, "float", "--no-fp16")
    expected = trt_home / "tensorrt" / "timing-trt11.0.0.5-NVIDIA-Fake-GPU-sm8.9.cache"
    assert expected.read_bytes() == b"FAKECACHE:11.0.0.5:1"


@pytest.mark.parametrize("content", [b"FAKECACHE:10.8.0.1:5", b"corrupt"])
def test_unusable_timing_cache_fails_without_writing_an_engine(
    content: bytes, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "trt.cache"
    cache.write_bytes(content)
    install(monkeypatch, "10.9.0.34")
    with pytest.raises(CliplitError, match="cannot use the timing cache"):
        build(tmp_path, tmp_path_factory, "float", "--timing-cache", str(cache))
    assert cache.read_bytes() == content
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_parity_below_40_db_fails_and_leaves_no_engine(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = install(monkeypatch, "11.0.0.5")
    rng = np.random.default_rng(0)
    stack.trt.corrupt = lambda value: (value + rng.normal(0, 0.05, value.shape)).astype(value.dtype)
    with pytest.raises(CliplitError, match=r"PSNR \d+\.\d dB < 40 dB\); the engine was not written"):
        build(tmp_path, tmp_path_factory, "float")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # no engine, no sidecar, no temporary file
    # the build itself succeeded, so its timing cache was kept
    assert len(list((tmp_path / "home" / "tensorrt").iterdir())) == 1


def test_parity_runs_on_the_verify_images_fitted_into_the_profile(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert PHOTO.is_file(), f"missing shared test data {PHOTO}"
    install(monkeypatch, "11.0.0.5")
    _, sidecar = build(tmp_path, tmp_path_factory, "uint8", "--verify-image", str(PHOTO))
    assert [item["input"] for item in sidecar.parity] == [f"{PHOTO.name} at 128x96"]
    assert sidecar.parity_psnr_db >= PSNR_THRESHOLD_DB


def test_parser_and_builder_failures_are_reported(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    class RejectingParser(FakeParser):
        def parse(self, data: bytes) -> bool:
            self.errors.append("In node 3 (Resize): UNSUPPORTED_NODE")
            return False

    stack = install(monkeypatch, "10.9.0.34")
    stack.trt.OnnxParser = RejectingParser
    with pytest.raises(CliplitError, match=r"ONNX parser rejected the model: In node 3 \(Resize\): UNSUPPORTED_NODE"):
        build(tmp_path, tmp_path_factory, "float")
    stack = install(monkeypatch, "10.9.0.34")
    stack.trt.build_fails = True
    with pytest.raises(CliplitError, match="TensorRT failed to build the engine"):
        build(tmp_path, tmp_path_factory, "float")
    assert not (tmp_path / "out" / "m.engine").exists()


def test_without_tensorrt_the_message_says_what_to_install(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(CliplitError) as caught:
        build(tmp_path, tmp_path_factory, "float")
    message = str(caught.value)
    assert "pip install 'cliplit[tensorrt]'" in message and "NVIDIA GPU" in message
    assert "clip-lit-float.onnx was written and runs with ONNX Runtime" in message


def test_lean_runtime_alone_cannot_build(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    for kind in ("lean", "dispatch"):
        install(monkeypatch, "10.9.0.34", kind=kind)
        with pytest.raises(CliplitError, match="needs the full TensorRT package"):
            build(tmp_path, tmp_path_factory, "float")


def test_without_gpu_the_message_says_a_gpu_is_needed(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(
        monkeypatch,
        "11.0.0.5",
        driver_version=0,
        fail={"cudaGetDeviceCount": cudaError_t.cudaErrorInsufficientDriver},
    )
    with pytest.raises(CliplitError, match=r"no usable NVIDIA GPU: no NVIDIA driver is installed.*No engine was built"):
        build(tmp_path, tmp_path_factory, "float")


def test_tensorrt_older_than_10_is_refused(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, "8.6.1.6")
    with pytest.raises(CliplitError, match=r"TensorRT 8\.6\.1\.6 is too old"):
        build(tmp_path, tmp_path_factory, "float")


def test_engine_options_are_checked_before_exporting(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--onnx", str(tmp_path / "m.onnx")]
    with pytest.raises(CliplitError, match="--max-shape, --version-compatible only apply to a TensorRT engine"):
        engine_settings(parser.parse_args([*base, "--max-shape", "1x3x64x64", "--version-compatible"]))
    assert engine_settings(parser.parse_args(base)) is None
    engine = tmp_path / "m.engine"
    with pytest.raises(CliplitError, match=r"--workspace 0\.0"):
        engine_settings(parser.parse_args([*base, "--engine", str(engine), "--workspace", "0"]))
    with pytest.raises(CliplitError, match="did you mean 1x64x64x3"):
        engine_settings(
            parser.parse_args([*base, "--engine", str(engine), "--io", "uint8", "--min-shape", "1x3x64x64"])
        )
    sidecar_path(engine).write_text("{}")
    with pytest.raises(CliplitError, match=r"m\.engine\.json exists; pass --overwrite"):
        engine_settings(parser.parse_args([*base, "--engine", str(engine)]))


def test_fit_to_profile_keeps_the_aspect_ratio_inside_the_bounds() -> None:
    profile = profile_from_args("float", "1x3x16x16", "1x3x48x64", "1x3x96x128")
    assert fit_to_profile(np.zeros((1536, 2048, 3), np.uint8), profile).shape == (96, 128, 3)
    assert fit_to_profile(np.zeros((8, 4, 3), np.uint8), profile).shape == (32, 16, 3)
    assert fit_to_profile(np.zeros((50, 60, 3), np.uint8), profile).shape == (50, 60, 3)


def test_synthetic_scene_is_deterministic_and_backlit() -> None:
    scene = synthetic_backlit(120, 160)
    assert scene.dtype == np.uint8 and scene.shape == (120, 160, 3)
    assert np.array_equal(scene, synthetic_backlit(120, 160))
    assert scene[:20].mean() > 190 and scene[-20:].mean() < 90  # bright sky over a dark foreground


def test_a_graph_tensorrt_would_reject_fails_before_tensorrt_is_touched(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The static check runs first: the old uint8 wrapper (transpose, then cast) is refused naming node and rule."""
    from test_tensorrt_compat import transpose_before_cast

    broken = tmp_path / "old-uint8.onnx"
    onnx.save(transpose_before_cast(onnx.load(str(exported_onnx(tmp_path_factory, "uint8")))), str(broken))
    stack = install(monkeypatch, "10.9.0.34")
    settings = BuildSettings(profile_from_args("uint8", *SHAPES["uint8"]))
    with pytest.raises(CliplitError, match=r"/Transpose \(Transpose\) breaks rule uint8-io-only"):
        build_engine(broken, tmp_path / "m.engine", settings)
    assert stack.log == []  # neither TensorRT nor CUDA was called
    assert not (tmp_path / "m.engine").exists()


def test_the_fake_parser_rejects_uint8_intermediates_too(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake is as strict as TensorRT's parser, so the static check is not the only guard in these tests."""
    from test_tensorrt_compat import transpose_before_cast

    from cliplit.export.tensorrt_build import build_serialized_engine

    stack = install(monkeypatch, "10.9.0.34")
    broken = transpose_before_cast(onnx.load(str(exported_onnx(tmp_path_factory, "uint8"))))
    settings = BuildSettings(profile_from_args("uint8", *SHAPES["uint8"]), fp16=False)
    with pytest.raises(CliplitError, match=r"parser rejected the model: In node \d+ with name: /Transpose"):
        build_serialized_engine(stack.trt, broken, settings, b"")


def test_device_option_builds_and_checks_parity_on_that_gpu(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, trt_home: Path
) -> None:
    stack = install(monkeypatch, "11.0.0.5", device_count=2)
    build(tmp_path, tmp_path_factory, "uint8", "--device", "1", "--no-fp16")
    assert set(stack.log.of("cudaSetDevice")) == {(1,)}  # never GPU 0
    assert {stream.device for stream in stack.cuda.streams.values()} <= {1}
    with pytest.raises(CliplitError, match="GPU 2 does not exist; this machine has 2"):
        build(tmp_path, tmp_path_factory, "uint8", "--device", "2", "--overwrite")


def test_build_settings_validate_themselves(tmp_path: Path) -> None:
    profile = profile_from_args("float", *SHAPES["float"])
    with pytest.raises(CliplitError, match=r"--workspace -1: the builder workspace must be a positive number"):
        BuildSettings(profile, workspace_gib=-1)
    with pytest.raises(CliplitError, match="--device -1: GPU indices start at 0"):
        BuildSettings(profile, device=-1)
    with pytest.raises(CliplitError, match=r"--verify-image .*missing\.jpg: no such image file"):
        BuildSettings(profile, verify_images=[tmp_path / "missing.jpg"])
    settings = BuildSettings(profile, timing_cache=str(tmp_path / "c"), verify_images=[PHOTO])
    assert settings.timing_cache == tmp_path / "c" and settings.verify_images == (PHOTO,)
