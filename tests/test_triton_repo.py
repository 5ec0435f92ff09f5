"""`export-engine --triton-repo`: the model repository for stock Triton, parsed with Triton's own schema.

The configuration is parsed here independently of the writer (``text_format.Parse`` into tritonclient's
``model_config_pb2.ModelConfig``, which rejects unknown fields and bad enums) and its fields compared with what a
Triton deployment of each I/O variant needs.
"""

from __future__ import annotations

import argparse

import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'cliplit[serve]')")
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cliplit.core.atomic import OutputExistsError
from cliplit.core.errors import CliplitError
from cliplit.core.sidecar import EngineSidecar
from cliplit.export.cli import add_arguments
from cliplit.export.triton_repo import (
    TritonRepoSettings,
    check_model_config,
    parse_model_config,
    settings_from_args,
    write_triton_repo,
)


def parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_uint8_onnx_repository(uint8_onnx, tmp_path):
    model_dir = write_triton_repo(tmp_path / "repo", uint8_onnx, "uint8", TritonRepoSettings(instances=3))
    assert model_dir == tmp_path / "repo" / "clip_lit"
    assert (model_dir / "1" / "model.onnx").read_bytes() == uint8_onnx.read_bytes()
    config = parse(model_dir / "config.pbtxt")
    assert config.name == "clip_lit"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("frame", model_config_pb2.TYPE_UINT8, [-1, -1, 3])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("enhanced", model_config_pb2.TYPE_UINT8, [-1, -1, 3])
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(group.count, group.kind) for group in config.instance_group] == [
        (3, model_config_pb2.ModelInstanceGroup.KIND_AUTO)
    ]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["1", "clip_lit", "config.pbtxt", "model.onnx", "repo"]


def test_float_onnx_repository(float_onnx, tmp_path):
    model_dir = write_triton_repo(tmp_path, float_onnx, "float", TritonRepoSettings("enhancer", max_batch=2))
    config = parse(model_dir / "config.pbtxt")
    assert (config.name, config.max_batch_size) == ("enhancer", 2)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("image", model_config_pb2.TYPE_FP32, [3, -1, -1])
    ]
    assert {t.name: list(t.dims) for t in config.output} == {"enhanced": [3, -1, -1], "light_map": [1, -1, -1]}


def fake_sidecar(min_batch: int, max_batch: int) -> EngineSidecar:
    return EngineSidecar(
        io="uint8",
        input_name="frame",
        profile={"min": [min_batch, 64, 64, 3], "opt": [1, 1080, 1920, 3], "max": [max_batch, 2160, 3840, 3]},
        precision="fp16",
        fp16_method="builder-flag",
        tensorrt_version="10.0.0",
        gpu_name="test",
        compute_capability="8.9",
        onnx_sha256="0" * 64,
        version_compatible=False,
        cliplit_version="0",
        workspace_gib=4.0,
    )


def test_engine_repository_takes_the_profiles_batch(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan bytes")
    model_dir = write_triton_repo(tmp_path / "repo", engine, "uint8", TritonRepoSettings(), engine=fake_sidecar(1, 4))
    config = parse(model_dir / "config.pbtxt")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 4)
    assert [group.kind for group in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert (model_dir / "1" / "model.plan").read_bytes() == b"plan bytes"


@pytest.mark.parametrize(("low", "high", "asked"), [(1, 4, 8), (2, 8, None)])
def test_engine_profile_must_cover_the_batches(tmp_path, low, high, asked):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(CliplitError, match=f"takes batches of {low} to {high} frames"):
        write_triton_repo(
            tmp_path / "repo", engine, "uint8", TritonRepoSettings(max_batch=asked), engine=fake_sidecar(low, high)
        )
    assert not (tmp_path / "repo").exists()


def test_existing_repository_is_not_overwritten(uint8_onnx, tmp_path):
    write_triton_repo(tmp_path, uint8_onnx, "uint8", TritonRepoSettings())
    config = tmp_path / "clip_lit" / "config.pbtxt"
    before = config.read_text()
    with pytest.raises(OutputExistsError):
        write_triton_repo(tmp_path, uint8_onnx, "uint8", TritonRepoSettings(max_batch=2))
    assert config.read_text() == before
    write_triton_repo(tmp_path, uint8_onnx, "uint8", TritonRepoSettings(max_batch=2), overwrite=True)
    assert parse(config).max_batch_size == 2


def test_schema_and_contract_checks_fail_clearly():
    with pytest.raises(CliplitError, match="not a valid Triton model configuration"):
        parse_model_config('name: "m"\nmax_batch: 8\n')  # the field is max_batch_size
    with pytest.raises(CliplitError, match="not a valid Triton model configuration"):
        parse_model_config('name: "m"\ninput [ { name: "frame" data_type: TYPE_UINT9 } ]\n')
    config = parse_model_config(
        'name: "m"\nmax_batch_size: 0\ninput [ { name: "image" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]\n'
        'output [ { name: "enhanced" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] } ]\n'
    )
    with pytest.raises(CliplitError) as caught:
        check_model_config(config, "uint8")
    message = str(caught.value)
    assert "max_batch_size must be at least 1" in message
    assert "inputs ['image'] should be ['frame']" in message
    assert "'enhanced' should be TYPE_UINT8" in message


def export_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--onnx", "m.onnx", *argv])


def test_cli_options_are_checked_before_any_export(tmp_path):
    assert settings_from_args(export_args()) is None
    settings = settings_from_args(export_args("--triton-repo", str(tmp_path), "--triton-instances", "2"))
    assert settings == TritonRepoSettings(instances=2)
    with pytest.raises(CliplitError, match="--triton-instances must be at least 1"):
        settings_from_args(export_args("--triton-repo", str(tmp_path), "--triton-instances", "0"))
    with pytest.raises(CliplitError, match="drop --opencv-static"):
        settings_from_args(export_args("--triton-repo", str(tmp_path), "--opencv-static", "64x64"))
    (tmp_path / "clip_lit" / "1").mkdir(parents=True)
    (tmp_path / "clip_lit" / "1" / "model.onnx").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        settings_from_args(export_args("--triton-repo", str(tmp_path)))


def test_export_engine_writes_the_repository(tmp_path, capsys):
    from cliplit.export.cli import main

    onnx_path, repo = tmp_path / "m.onnx", tmp_path / "models"
    argv = ["--onnx", str(onnx_path), "--io", "uint8", "--triton-repo", str(repo), "--triton-max-batch", "4"]
    assert main(argv) == 0
    assert f"wrote the Triton model repository {repo}" in capsys.readouterr().out
    assert (repo / "clip_lit" / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    config = parse(repo / "clip_lit" / "config.pbtxt")
    assert (config.platform, config.max_batch_size, config.input[0].name) == ("onnxruntime_onnx", 4, "frame")
    before = (repo / "clip_lit" / "config.pbtxt").read_text()
    assert main([*argv[:2], "--triton-repo", str(repo), "--overwrite"]) == 0  # a float model replaces it when asked
    assert parse(repo / "clip_lit" / "config.pbtxt").input[0].name == "image"
    assert (repo / "clip_lit" / "config.pbtxt").read_text() != before
