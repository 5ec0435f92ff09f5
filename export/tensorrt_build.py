"""Build a TensorRT engine from an exported ONNX model: ``build_engine(onnx_path, engine_path, settings)``.

Every TensorRT builder call of cliplit is in this module; ``BuildSettings`` holds everything besides the two paths
and is validated once, when it is made (``export-engine`` maps its arguments onto it in ``cliplit.export.cli``).

Before TensorRT is even imported the graph is checked statically (``cliplit.export.trt_compat``), so a model the
parser would reject fails on any machine, naming the node and the rule. FP16 differs by TensorRT version: TensorRT 10
builds a weakly typed network with ``BuilderFlag.FP16`` and the wrapper's layers (the final division and clamps, the
uint8 pre/post-processing) pinned to FP32; TensorRT 11 removed that flag and weak typing, so there the network is
strongly typed and parsed from the FP16 copy made by ``cliplit.export.fp16``, which keeps those same nodes in FP32.
The engine is then run on real inputs and compared with ONNX Runtime FP32 on the ONNX file
(``cliplit.export.parity``); below ``PSNR_THRESHOLD_DB`` the build fails and nothing is written. The engine and its
sidecar are written atomically; the timing cache is saved back after the build.

Version-compatible engines (``version_compatible``) embed TensorRT's lean runtime: ``BuilderFlag.VERSION_COMPATIBLE``
alone, without ``EXCLUDE_LEAN_RUNTIME``, which is the developer guide's recommended build ("Version Compatibility":
the request "causes a copy of the lean runtime to be added to the plan"). Such a plan runs on the full ``tensorrt``
and on ``tensorrt_dispatch`` of the same or a later version, which load that embedded runtime once the application
allows host code (the runtime backend sets ``engine_host_code_allowed``, as trtexec does for every
version-compatible engine: samples/common/sampleEngines.cpp, ``LazilyDeserializedEngine::get``). Excluding the lean
runtime would instead oblige every deployment to locate the builder's own ``libnvinfer_lean`` and pass it to
``IRuntime::loadRuntime``; cliplit does not offer that mode. docs/tensorrt.md has the full table.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from cliplit.core.atomic import atomic_output, check_writable
from cliplit.core.contract import io_spec
from cliplit.core.cuda import CudaRuntime, GpuInfo
from cliplit.core.errors import CliplitError
from cliplit.core.shapes import ProfileShapes
from cliplit.core.sidecar import EngineSidecar, sidecar_path, write_sidecar
from cliplit.core.tensorrt import import_tensorrt, tensorrt_major
from cliplit.core.version import cliplit_version
from cliplit.core.weights import cliplit_home, sha256_of
from cliplit.export.export_settings import ExportSettings
from cliplit.export.fp16 import convert_to_fp16, split_nodes
from cliplit.export.parity import PSNR_THRESHOLD_DB, measure_parity, parity_images
from cliplit.export.trt_compat import check_tensorrt_compat

GIB = 1 << 30
# onnx-tensorrt tags each layer it creates for an ONNX node with "[ONNX Layer: <node name>]" (or "... | Local
# Function: ...]"): importerUtils.cpp, processMetadata, since TensorRT 10.0; Python reads it as ``ILayer.metadata``
# (NVIDIA/TensorRT python/src/infer/pyGraph.cpp). Layer *names* cannot be trusted to find
# the node: the parser makes them unique by appending "_<counter>" (weightUtils.cpp, generateUniqueName), and helper
# layers get "ONNXTRT_*" or weight names.
_LAYER_METADATA = re.compile(r"^\[ONNX Layer: (?P<node>.*?)(?: \| .*)?\]$")


@dataclass(frozen=True)
class BuildSettings:
    """Everything the builder is told besides the ONNX file and the engine path; checked when made.

    ``profile``: the optimization profile (its ``io`` is the model's I/O variant); ``fp16``: FP16 engine with the
    final division and clamp in FP32 (else FP32); ``workspace_gib``: builder scratch memory limit;
    ``timing_cache``: the cache file to reuse and update (None: one per TensorRT version and GPU under
    ``$CLIPLIT_HOME/tensorrt``); ``version_compatible``: embed the lean runtime so later TensorRT versions and the
    dispatch runtime can run the engine; ``device``: the GPU to build on (and check parity on); ``verify_images``:
    photos for the parity check (none: a synthetic scene); ``overwrite``: replace an existing engine and sidecar.
    """

    profile: ProfileShapes
    # defaults stated once, by export-engine's settings (which its parser reads without importing onnx)
    fp16: bool = ExportSettings.fp16
    workspace_gib: float = ExportSettings.workspace
    timing_cache: Path | None = None
    version_compatible: bool = ExportSettings.version_compatible
    device: int = ExportSettings.device
    verify_images: tuple[Path, ...] = ()
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "verify_images", tuple(Path(path) for path in self.verify_images))
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
        if not self.workspace_gib > 0:
            raise CliplitError(
                f"--workspace {self.workspace_gib}: the builder workspace must be a positive number of GiB"
            )
        if self.device < 0:
            raise CliplitError(f"--device {self.device}: GPU indices start at 0")
        missing = [path for path in self.verify_images if not path.is_file()]
        if missing:
            raise CliplitError(f"--verify-image {missing[0]}: no such image file")


@dataclass(frozen=True)
class EngineBuild:
    """A serialized engine, the updated timing cache and how FP16 was obtained (None for FP32)."""

    plan: bytes
    timing_cache: bytes
    fp16_method: str | None


def check_engine_outputs(engine_path: str | Path, overwrite: bool) -> None:
    """Fail early when the engine or its sidecar exists and may not be replaced, or cannot be written."""
    check_writable(engine_path, overwrite)
    check_writable(sidecar_path(engine_path), overwrite)


def build_engine(onnx_path: str | Path, engine_path: str | Path, settings: BuildSettings) -> EngineSidecar:
    """Build, verify and write the engine of ``onnx_path`` (a cliplit export) with ``settings``; return its sidecar."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    check_engine_outputs(engine_path, settings.overwrite)
    model = onnx.load(str(onnx_path))
    check_tensorrt_compat(model, settings.profile, source=str(onnx_path))
    trt, gpu = _tensorrt_and_gpu(settings.device, onnx_path)
    cache_path = settings.timing_cache or default_timing_cache(trt.__version__, gpu)
    cached = cache_path.read_bytes() if cache_path.is_file() else b""
    precision = "FP16" if settings.fp16 else "FP32"
    print(
        f"building a TensorRT {trt.__version__} {precision} engine for {gpu.name} ({settings.profile.describe()}) ..."
    )
    started = time.perf_counter()
    build = build_serialized_engine(trt, model, settings, cached)
    print(f"  built in {time.perf_counter() - started:.0f} s ({_fp16_note(build.fp16_method, tensorrt_major(trt))})")
    with atomic_output(cache_path, overwrite=True) as tmp:
        tmp.write_bytes(build.timing_cache)
    print(f"  timing cache saved to {cache_path}")
    images = parity_images(settings.verify_images, settings.profile)
    with atomic_output(engine_path, overwrite=settings.overwrite) as tmp:
        tmp.write_bytes(build.plan)
        checks = measure_parity(
            tmp,
            onnx_path,
            images,
            settings.profile,
            device=settings.device,
            version_compatible=settings.version_compatible,
        )
        for check in checks:
            print(f"  parity on {check.case}: PSNR {check.value:.1f} dB against ONNX Runtime FP32")
        worst = min(check.value for check in checks)
        if not all(check.passed for check in checks):
            raise CliplitError(
                f"the engine's output differs from ONNX Runtime FP32 (PSNR {worst:.1f} dB < "
                f"{PSNR_THRESHOLD_DB:.0f} dB); the engine was not written. Try --no-fp16 to see whether FP16 is the "
                "cause, and report the TensorRT version and GPU"
            )
        sidecar = replace(
            _sidecar(onnx_path, settings, build, trt.__version__, gpu),
            parity=[{"input": check.case, "psnr_db": check.value} for check in checks],
            parity_psnr_db=worst,
        )
        write_sidecar(engine_path, sidecar, overwrite=settings.overwrite)
    print(f"wrote {engine_path} and {sidecar_path(engine_path)} (worst parity {sidecar.parity_psnr_db:.1f} dB)")
    return sidecar


def _tensorrt_and_gpu(device: int, onnx_path: Path) -> tuple[ModuleType, GpuInfo]:
    """The full TensorRT and the build GPU (made current for this thread), or why there are none."""
    try:
        trt = import_tensorrt(builder=True)
        tensorrt_major(trt)
        return trt, CudaRuntime().gpu(device)
    except CliplitError as error:
        raise CliplitError(
            f"{error}. No engine was built; {onnx_path} was written and runs with ONNX Runtime"
        ) from None


def _sidecar(
    onnx_path: Path, settings: BuildSettings, build: EngineBuild, tensorrt_version: str, gpu: GpuInfo
) -> EngineSidecar:
    io = settings.profile.io
    return EngineSidecar(
        io=io,
        input_name=io_spec(io).input_name,
        profile=settings.profile.as_dict(),
        precision="fp16" if settings.fp16 else "fp32",
        fp16_method=build.fp16_method,
        tensorrt_version=tensorrt_version,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        onnx_sha256=sha256_of(onnx_path),
        version_compatible=settings.version_compatible,
        cliplit_version=cliplit_version(),
        workspace_gib=settings.workspace_gib,
    )


def build_serialized_engine(
    trt: ModuleType, model: onnx.ModelProto, settings: BuildSettings, timing_cache: bytes
) -> EngineBuild:
    """Parse ``model`` and build a serialized engine with one optimization profile; ``timing_cache`` may be empty."""
    strongly_typed = tensorrt_major(trt) >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    source = model
    if settings.fp16 and strongly_typed:
        source = convert_to_fp16(model)
        check_tensorrt_compat(source, settings.profile, source="the FP16 copy of the ONNX model")
    if not parser.parse(source.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CliplitError(f"TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * GIB))
    fp16_method = _configure_fp16(trt, config, network, model, settings.fp16, strongly_typed)
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)  # the lean runtime is embedded; see the module docstring
    profile = builder.create_optimization_profile()
    spec = io_spec(settings.profile.io)
    profile.set_shape(spec.input_name, settings.profile.min, settings.profile.opt, settings.profile.max)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise CliplitError(
            "TensorRT cannot use the timing cache (made by another TensorRT version or GPU, or corrupt): delete it "
            "or pass another --timing-cache file"
        )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise CliplitError("TensorRT failed to build the engine (its log above says why)")
    return EngineBuild(
        plan=bytes(plan), timing_cache=bytes(config.get_timing_cache().serialize()), fp16_method=fp16_method
    )


def _configure_fp16(
    trt: ModuleType, config: Any, network: Any, model: onnx.ModelProto, fp16: bool, strongly_typed: bool
) -> str | None:
    """Set up FP16 for this TensorRT version; return how (the sidecar's ``fp16_method``), None for FP32."""
    if not fp16:
        return None
    if strongly_typed:
        return "strongly-typed-onnx"  # the network was parsed from the FP16 copy
    config.set_flag(trt.BuilderFlag.FP16)
    _pin_wrapper_to_fp32(trt, network, split_nodes(model)[1])
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return "builder-flag"


def _network_flags(trt: ModuleType, strongly_typed: bool) -> int:
    """TensorRT 11 networks are always strongly typed; its flag is kept for API compatibility but may go away."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None) if strongly_typed else None
    return 0 if flag is None else 1 << int(flag)


def source_node(layer: Any) -> str | None:
    """The ONNX node a parsed layer came from (from its metadata), or None for the parser's helper layers."""
    match = _LAYER_METADATA.match(layer.metadata or "")
    return match["node"] if match else None


def _pin_wrapper_to_fp32(trt: ModuleType, network: Any, wrapper_nodes: list[str]) -> None:
    """TensorRT 10 FP16: keep the layers parsed from the wrapper's float nodes in FP32 (precision and outputs).

    A layer belongs to the wrapper when its metadata names a wrapper node. Layers reading the uint8 frame (its cast)
    are left alone: their types are fixed by the graph.
    """
    wrapper = set(wrapper_nodes)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if source_node(layer) not in wrapper:
            continue
        outputs = [layer.get_output(i) for i in range(layer.num_outputs)]
        inputs = [layer.get_input(i) for i in range(layer.num_inputs)]
        if any(t.dtype != trt.float32 for t in outputs) or any(t is not None and t.dtype == trt.uint8 for t in inputs):
            continue
        layer.precision = trt.float32
        for i in range(layer.num_outputs):
            layer.set_output_type(i, trt.float32)
        pinned += 1
    if pinned == 0:
        raise CliplitError("found none of the final division and clamp among TensorRT's layers; cannot keep them FP32")


def default_timing_cache(tensorrt_version: str, gpu: GpuInfo) -> Path:
    """A per-TensorRT-version, per-GPU cache under ``$CLIPLIT_HOME/tensorrt``, so caches never mismatch."""
    gpu_name = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-")
    return cliplit_home() / "tensorrt" / f"timing-trt{tensorrt_version}-{gpu_name}-sm{gpu.compute_capability}.cache"


def _fp16_note(method: str | None, major: int) -> str:
    if method == "builder-flag":
        return f"TensorRT {major}: FP16 builder flag, final division and clamp pinned to FP32"
    if method == "strongly-typed-onnx":
        return f"TensorRT {major}: strongly typed FP16 ONNX, final division and clamp in FP32"
    return "FP32"
