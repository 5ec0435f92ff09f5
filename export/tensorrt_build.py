"""Build a TensorRT engine from the exported ONNX model: every TensorRT builder call of cliplit is in this module.

The ONNX file is written (and verified against PyTorch) before anything here runs, so a machine without TensorRT or
a GPU still gets a working model; building then fails fast with a message saying what to install. FP16 differs by
TensorRT version: TensorRT 10 builds a weakly typed network with ``BuilderFlag.FP16`` and the wrapper's layers (the
final division and clamps, the uint8 pre/post-processing) pinned to FP32; TensorRT 11 removed that flag and weak
typing, so there the network is strongly typed and parsed from the FP16 copy made by ``cliplit.export.fp16``, which
keeps those same nodes in FP32. The engine is then run on real inputs and compared with ONNX Runtime FP32 on the
ONNX file; below ``PSNR_THRESHOLD_DB`` the build fails and nothing is written. The engine and its sidecar are
written atomically; the timing cache (which makes rebuilds on the same GPU much faster) is saved back after the build.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import onnx

from cliplit.core.atomic import atomic_output, check_writable
from cliplit.core.contract import io_spec
from cliplit.core.cuda import CudaRuntime, GpuInfo
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.core.shapes import ProfileShapes, batch_height_width, profile_from_args
from cliplit.core.sidecar import EngineSidecar, sidecar_path, write_sidecar
from cliplit.core.version import cliplit_version
from cliplit.core.weights import cliplit_home, sha256_of
from cliplit.export.fp16 import convert_to_fp16, split_nodes

if TYPE_CHECKING:
    from cliplit.export.onnx_export import ExportReport  # imports torch; only export-engine's run needs it loaded

# FP16 keeps the enhanced image within about 1/100 of a uint8 level of FP32 (well above 40 dB); a graph or precision
# error (an FP16 division, a wrong layout) lands far below.
PSNR_THRESHOLD_DB = 40.0
PSNR_PEAK = {"float": 1.0, "uint8": 255.0}
GIB = 1 << 30
ENGINE_ONLY_OPTIONS = ("min_shape", "opt_shape", "max_shape", "timing_cache", "version_compatible")


@dataclass(frozen=True)
class BuildSettings:
    """Everything the builder is told besides the network itself."""

    profile: ProfileShapes
    fp16: bool
    workspace_gib: float
    version_compatible: bool


@dataclass(frozen=True)
class EngineBuild:
    """A serialized engine, the updated timing cache and how FP16 was obtained (None for FP32)."""

    plan: bytes
    timing_cache: bytes
    fp16_method: str | None


def check_engine_args(args: argparse.Namespace) -> ProfileShapes | None:
    """Validate the engine options before anything is exported; return the profile (None without ``--engine``)."""
    if args.engine is None:
        given = [name for name in ENGINE_ONLY_OPTIONS if getattr(args, name)]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CliplitError(f"{options} only apply to a TensorRT engine: add --engine OUT.engine")
        return None
    check_writable(args.engine, args.overwrite)
    check_writable(sidecar_path(args.engine), args.overwrite)
    if not args.workspace > 0:
        raise CliplitError(f"--workspace {args.workspace}: the builder workspace must be a positive number of GiB")
    return profile_from_args(args.io, args.min_shape, args.opt_shape, args.max_shape)


def build_engine_from_args(args: argparse.Namespace, report: ExportReport) -> EngineSidecar:
    """Build, verify and write the engine of ``args`` from the ONNX model ``report`` describes."""
    profile = check_engine_args(args)
    assert profile is not None  # export-engine only calls this with --engine
    try:
        from cliplit.runtime.backends.tensorrt import import_tensorrt

        trt = import_tensorrt(lean_ok=False)
        major = tensorrt_major(trt)
        gpu = CudaRuntime().gpu(0)
    except CliplitError as error:
        raise CliplitError(
            f"{error}. No engine was built; {report.path} was written and runs with ONNX Runtime"
        ) from None
    settings = BuildSettings(profile, args.fp16, args.workspace, args.version_compatible)
    cache_path = args.timing_cache or default_timing_cache(trt.__version__, gpu)
    cached = cache_path.read_bytes() if cache_path.is_file() else b""
    precision = "FP16" if args.fp16 else "FP32"
    print(f"building a TensorRT {trt.__version__} {precision} engine for {gpu.name} ({profile.describe()}) ...")
    started = time.perf_counter()
    build = build_serialized_engine(trt, onnx.load(str(report.path)), settings, cached)
    print(f"  built in {time.perf_counter() - started:.0f} s ({_fp16_note(build.fp16_method, major)})")
    with atomic_output(cache_path, overwrite=True) as tmp:
        tmp.write_bytes(build.timing_cache)
    print(f"  timing cache saved to {cache_path}")
    sidecar = EngineSidecar(
        io=report.io,
        input_name=io_spec(report.io).input_name,
        profile=profile.as_dict(),
        precision="fp16" if args.fp16 else "fp32",
        fp16_method=build.fp16_method,
        tensorrt_version=trt.__version__,
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        onnx_sha256=sha256_of(report.path),
        version_compatible=args.version_compatible,
        cliplit_version=cliplit_version(),
        workspace_gib=args.workspace,
    )
    images = parity_images(args.verify_image, profile)
    with atomic_output(args.engine, overwrite=args.overwrite) as tmp:
        tmp.write_bytes(build.plan)
        sidecar.parity = measure_parity(tmp, report.path, images, sidecar)
        sidecar.parity_psnr_db = min(item["psnr_db"] for item in sidecar.parity)
        for item in sidecar.parity:
            print(f"  parity on {item['input']}: PSNR {item['psnr_db']:.1f} dB against ONNX Runtime FP32")
        if not sidecar.parity_psnr_db >= PSNR_THRESHOLD_DB:
            raise CliplitError(
                f"the engine's output differs from ONNX Runtime FP32 (PSNR {sidecar.parity_psnr_db:.1f} dB < "
                f"{PSNR_THRESHOLD_DB:.0f} dB); the engine was not written. Try --no-fp16 to see whether FP16 is the "
                "cause, and report the TensorRT version and GPU"
            )
        write_sidecar(args.engine, sidecar, overwrite=args.overwrite)
    print(f"wrote {args.engine} and {sidecar_path(args.engine)} (worst parity {sidecar.parity_psnr_db:.1f} dB)")
    return sidecar


def tensorrt_major(trt: ModuleType) -> int:
    """The major version of the imported TensorRT; the FP16 path depends on it. Older than 10 is refused."""
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise CliplitError(f"TensorRT {trt.__version__} is too old; cliplit needs TensorRT 10 or newer")
    return major


def build_serialized_engine(
    trt: ModuleType, model: onnx.ModelProto, settings: BuildSettings, timing_cache: bytes
) -> EngineBuild:
    """Parse ``model`` and build a serialized engine with one optimization profile; ``timing_cache`` may be empty."""
    strongly_typed = tensorrt_major(trt) >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    source = convert_to_fp16(model) if settings.fp16 and strongly_typed else model
    if not parser.parse(source.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CliplitError(f"TensorRT's ONNX parser rejected the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * GIB))
    fp16_method = None
    if settings.fp16 and strongly_typed:
        fp16_method = "strongly-typed-onnx"
    elif settings.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        _pin_wrapper_to_fp32(trt, network, split_nodes(model)[1])
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        fp16_method = "builder-flag"
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)  # deploy with tensorrt_lean instead of in every plan
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


def _network_flags(trt: ModuleType, strongly_typed: bool) -> int:
    """TensorRT 11 networks are always strongly typed; its flag is kept for API compatibility but may go away."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None) if strongly_typed else None
    return 0 if flag is None else 1 << int(flag)


def _pin_wrapper_to_fp32(trt: ModuleType, network: Any, wrapper_nodes: list[str]) -> None:
    """TensorRT 10 FP16: keep the layers parsed from the wrapper's float nodes in FP32 (precision and outputs).

    The parser names each layer after its ONNX node (helper layers get suffixes), so a layer belongs to the wrapper
    when its name starts with a wrapper node's name. Layers reading the uint8 frame (its cast) are left alone.
    """
    prefixes = tuple(wrapper_nodes)
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if not layer.name.startswith(prefixes):
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


def parity_images(paths: list[Path], profile: ProfileShapes) -> list[tuple[str, np.ndarray]]:
    """(label, RGB uint8 image inside the profile) for the --verify-image photos, or a synthetic backlit scene."""
    if not paths:
        _, height, width = batch_height_width(profile.io, profile.opt)
        print("  no --verify-image given: checking parity on a synthetic backlit scene; pass photos to check those")
        return [(f"synthetic backlit scene {width}x{height}", synthetic_backlit(height, width))]
    images = []
    for path in paths:
        rgb = fit_to_profile(read_image(path)[:, :, ::-1], profile)
        images.append((f"{path.name} at {rgb.shape[1]}x{rgb.shape[0]}", rgb))
    return images


def synthetic_backlit(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic backlit-looking RGB scene: bright sky, dark textured foreground, a soft horizon."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    sky = 195.0 + 50.0 * (1.0 - y) + 10.0 * x
    ground = 20.0 + 40.0 * x + 10.0 * np.sin(25.0 * x + 7.0 * y) + rng.normal(0.0, 6.0, (height, width))
    horizon = 0.55 + 0.08 * np.sin(6.0 * x)
    weight = 1.0 / (1.0 + np.exp(-(y - horizon) * 60.0))
    grey = sky * (1.0 - weight) + ground * weight
    tint = np.stack([grey * 1.0, grey * 0.93, grey * 0.85], axis=-1)
    return np.clip(np.rint(tint), 0, 255).astype(np.uint8)


def fit_to_profile(rgb: np.ndarray, profile: ProfileShapes) -> np.ndarray:
    """Resize ``rgb`` (keeping its aspect ratio where the profile allows) to a size inside the profile."""
    _, min_h, min_w = batch_height_width(profile.io, profile.min)
    _, max_h, max_w = batch_height_width(profile.io, profile.max)
    height, width = rgb.shape[:2]
    scale = min(1.0, max_h / height, max_w / width)
    scale = max(scale, min_h / height, min_w / width)
    new_h = min(max(round(height * scale), min_h), max_h)
    new_w = min(max(round(width * scale), min_w), max_w)
    if (new_h, new_w) == (height, width):
        return rgb
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)


def measure_parity(
    engine_path: Path, onnx_path: Path, images: list[tuple[str, np.ndarray]], sidecar: EngineSidecar
) -> list[dict[str, Any]]:
    """PSNR of the engine's enhanced image against ONNX Runtime FP32 on the same ONNX file, per image."""
    import onnxruntime as ort

    from cliplit.core.contract import model_input_from_rgb

    spec = io_spec(sidecar.io)
    min_batch = sidecar.profile["min"][0]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    results = []
    from cliplit.runtime.backends.tensorrt import TensorRTBackend, TensorRTOptions

    with TensorRTBackend(engine_path, TensorRTOptions(sidecar=sidecar)) as backend:
        for label, rgb in images:
            batch = np.repeat(model_input_from_rgb(sidecar.io, rgb), min_batch, axis=0)
            (reference,) = session.run(["enhanced"], {spec.input_name: batch})
            ours = backend.run(batch)["enhanced"]
            results.append({"input": label, "psnr_db": psnr(reference, ours, peak=PSNR_PEAK[sidecar.io])})
    return results


def _fp16_note(method: str | None, major: int) -> str:
    if method == "builder-flag":
        return f"TensorRT {major}: FP16 builder flag, final division and clamp pinned to FP32"
    if method == "strongly-typed-onnx":
        return f"TensorRT {major}: strongly typed FP16 ONNX, final division and clamp in FP32"
    return "FP32"
