"""A model repository for stock Triton Inference Server: ``config.pbtxt`` plus ``1/model.onnx`` or ``1/model.plan``.

This is what operators of NVIDIA's Triton containers deploy: Triton's own ONNX Runtime (``onnxruntime_onnx``) or
TensorRT (``tensorrt_plan``) backend runs the exported model, with no cliplit code on the server. The exported
models hold all pre- and post-processing (see :mod:`cliplit.export.onnx_export`), so a ``uint8`` model speaks the
same wire format as ``cliplit serve`` — ``frame`` N×H×W×3 uint8 BGR in, ``enhanced`` out — and ``cliplit enhance
--model triton://host:8000/clip_lit`` is a client of either.

The configuration declares the batch dimension through ``max_batch_size`` (so ``dims`` hold H, W and channels as -1
where dynamic), dynamic batching and an instance group. Triton batches only requests of one shape for such inputs,
so frames of different sizes never share a batch. The text is parsed back with Triton's own schema
(``model_config_pb2`` from ``tritonclient``), so a typo or a field Triton does not know fails here, not at deployment,
and is checked against the I/O contract. A TensorRT plan must be built with a profile whose batch range covers 1 to
``max_batch_size`` (``export-engine --min-shape 1x... --max-shape 8x...``), and runs only on the TensorRT version and
GPU it was built for: build it with the TensorRT of the Triton container that serves it.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliplit.core.atomic import atomic_output, check_writable
from cliplit.core.cli_settings import Flag, SettingsCli, from_args
from cliplit.core.contract import DEFAULT_MAX_BATCH, DEFAULT_MODEL_NAME, DEFAULT_QUEUE_DELAY_US, io_spec
from cliplit.core.errors import CliplitError
from cliplit.core.sidecar import EngineSidecar
from cliplit.export.export_settings import TRITON_GROUP, ExportSettings

#: Triton platform and model file name per kind of model file
PLATFORMS: dict[str, tuple[str, str]] = {
    ".onnx": ("onnxruntime_onnx", "model.onnx"),
    ".engine": ("tensorrt_plan", "model.plan"),
    ".plan": ("tensorrt_plan", "model.plan"),
}
_DTYPES = {"uint8": "TYPE_UINT8", "float32": "TYPE_FP32"}


@dataclass(frozen=True)
class TritonRepoSettings:
    """What the repository's configuration asks of Triton."""

    model_name: str = DEFAULT_MODEL_NAME
    max_batch: int | None = None  # None: DEFAULT_MAX_BATCH for ONNX, the profile's largest batch for a plan
    instances: int = 1
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US

    def __post_init__(self) -> None:
        if not self.model_name or "/" in self.model_name or self.model_name.startswith("."):
            raise CliplitError(f"--triton-model-name {self.model_name!r} is not a usable folder name")
        if self.max_batch is not None and self.max_batch < 1:
            raise CliplitError(f"--triton-max-batch must be at least 1, got {self.max_batch}")
        if self.instances < 1:
            raise CliplitError(f"--triton-instances must be at least 1, got {self.instances}")
        if self.queue_delay_us < 0:
            raise CliplitError(f"the queue delay must be at least 0 µs, got {self.queue_delay_us}")


#: the ``--triton-*`` options of export-engine (the repository's path, ``--triton-repo``, is ExportSettings')
OPTIONS = SettingsCli(
    TritonRepoSettings,
    flags={
        "model_name": Flag("model name", names=("--triton-model-name",)),
        "max_batch": Flag(
            f"max_batch_size (default: {DEFAULT_MAX_BATCH} for ONNX, the profile's largest batch for an engine)",
            names=("--triton-max-batch",),
        ),
        "instances": Flag("model instances per GPU", names=("--triton-instances",)),
    },
    groups={"model_name": TRITON_GROUP},
    exclude=frozenset({"queue_delay_us"}),
)


def settings_from_args(args: argparse.Namespace) -> TritonRepoSettings | None:
    """The repository settings of export-engine's arguments (None without --triton-repo); fails before any export
    if the options are wrong or the repository's files exist without --overwrite."""
    export = from_args(ExportSettings, args)
    if export.triton_repo is None:
        return None
    if export.opencv_static is not None:
        raise CliplitError("--triton-repo needs the dynamic model; drop --opencv-static")
    settings = OPTIONS.from_args(args)
    model_dir = export.triton_repo / settings.model_name
    suffix = ".plan" if export.engine is not None else ".onnx"
    check_writable(model_dir / "config.pbtxt", export.overwrite)
    check_writable(model_dir / "1" / PLATFORMS[suffix][1], export.overwrite)
    return settings


def write_for_export(
    export: ExportSettings, settings: TritonRepoSettings, onnx_path: Path, io: str, engine: EngineSidecar | None
) -> Path:
    """export-engine's last step: the repository of the engine it built, or else of the ONNX model."""
    model_file = onnx_path if engine is None else export.engine
    repo = export.triton_repo
    model_dir = write_triton_repo(repo, model_file, io, settings, engine=engine, overwrite=export.overwrite)
    print(f"wrote the Triton model repository {repo} (model {model_dir.name}; see docs/serving.md)")
    return model_dir


def model_config_text(io: str, platform: str, settings: TritonRepoSettings, max_batch: int) -> str:
    """The ``config.pbtxt`` of a cliplit model of I/O variant ``io`` on ``platform``."""
    spec = io_spec(io)
    channels_last = spec.input_layout == "NHWC"
    dims = "[ -1, -1, 3 ]" if channels_last else "[ 3, -1, -1 ]"
    outputs = [(name, dims if name == "enhanced" else "[ 1, -1, -1 ]") for name in spec.output_names]
    kind = "KIND_GPU" if platform == "tensorrt_plan" else "KIND_AUTO"  # ONNX: a GPU if there is one, else the CPU
    lines = [
        f"# {spec.input_name}: N x {'H x W x 3' if channels_last else '3 x H x W'} {spec.input_dtype} "
        f"{spec.colour_order} {spec.value_range}; written by cliplit export-engine --triton-repo",
        f'name: "{settings.model_name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        "input [",
        _tensor(spec.input_name, _DTYPES[spec.input_dtype], dims),
        "]",
        "output [",
        ",\n".join(_tensor(name, _DTYPES[spec.input_dtype], output_dims) for name, output_dims in outputs),
        "]",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {settings.queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {settings.instances}",
        f"    kind: {kind}",
        "  }",
        "]",
    ]
    return "\n".join(lines) + "\n"


def _tensor(name: str, data_type: str, dims: str) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: {data_type}\n    dims: {dims}\n  }}'


def parse_model_config(text: str) -> Any:
    """``text`` parsed with Triton's own ModelConfig schema (unknown fields, wrong types and bad enums fail)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as error:
        raise CliplitError(
            f"checking a Triton configuration needs tritonclient ({error}); install it with pip install "
            "'cliplit[serve]'"
        ) from error
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise CliplitError(f"not a valid Triton model configuration: {error}") from None


def check_model_config(config: Any, io: str) -> None:
    """Check a parsed configuration against the I/O contract of variant ``io``: names, types, ranks, batching."""
    from tritonclient.grpc import model_config_pb2

    spec = io_spec(io)
    expected_type = getattr(model_config_pb2, _DTYPES[spec.input_dtype])
    problems = []
    if config.max_batch_size < 1:
        problems.append("max_batch_size must be at least 1 (cliplit sends N×... batches)")
    if [tensor.name for tensor in config.input] != [spec.input_name]:
        problems.append(f"inputs {[t.name for t in config.input]} should be [{spec.input_name!r}]")
    if sorted(tensor.name for tensor in config.output) != sorted(spec.output_names):
        problems.append(f"outputs {[t.name for t in config.output]} should be {list(spec.output_names)}")
    for tensor in [*config.input, *config.output]:
        if tensor.data_type != expected_type or len(tensor.dims) != 3:
            problems.append(f"{tensor.name!r} should be {_DTYPES[spec.input_dtype]} with 3 dims after the batch")
    if problems:
        raise CliplitError(f"Triton configuration of {config.name!r} does not match io={io}: " + "; ".join(problems))


def write_triton_repo(
    repo: Path,
    model_file: Path,
    io: str,
    settings: TritonRepoSettings,
    *,
    engine: EngineSidecar | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``repo/<model>/config.pbtxt`` and ``repo/<model>/1/model.*`` (a copy of ``model_file``); returns the
    model's folder. ``engine`` is the sidecar of a TensorRT plan, whose profile bounds ``max_batch_size``."""
    suffix = model_file.suffix.lower()
    if suffix not in PLATFORMS:
        raise CliplitError(f"{model_file}: Triton serves .onnx models and TensorRT .engine/.plan files here")
    platform, file_name = PLATFORMS[suffix]
    if platform == "tensorrt_plan" and engine is None:
        raise CliplitError(f"{model_file}: a TensorRT plan goes into a repository with its sidecar (the profile)")
    max_batch = _max_batch(settings, engine if platform == "tensorrt_plan" else None)
    text = model_config_text(io, platform, settings, max_batch)
    check_model_config(parse_model_config(text), io)
    model_dir = repo / settings.model_name
    with atomic_output(model_dir / "1" / file_name, overwrite=overwrite) as tmp:
        shutil.copyfile(model_file, tmp)
    with atomic_output(model_dir / "config.pbtxt", overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return model_dir


def _max_batch(settings: TritonRepoSettings, engine: EngineSidecar | None) -> int:
    if engine is None:
        return settings.max_batch or DEFAULT_MAX_BATCH
    low, high = engine.profile["min"][0], engine.profile["max"][0]
    max_batch = settings.max_batch or high
    if low > 1 or max_batch > high:
        raise CliplitError(
            f"the engine's profile takes batches of {low} to {high} frames, but Triton sends 1 to {max_batch}: "
            f"rebuild with --min-shape 1x... and --max-shape {max_batch}x..., or lower --triton-max-batch"
        )
    return max_batch
