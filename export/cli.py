"""export-engine: a checkpoint becomes a verified ONNX model and, with --engine, an FP16 TensorRT engine.

The ONNX file is always written first (and verified against PyTorch), so a machine without a GPU still gets a model
it can run with ONNX Runtime; building the engine then fails fast with a clear message if TensorRT or a GPU is
missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cliplit.core.atomic import check_writable
from cliplit.core.contract import IO_VARIANTS
from cliplit.core.errors import CliplitError
from cliplit.core.extras import missing_extra_error
from cliplit.core.weights import DEFAULT_WEIGHTS
from cliplit.export import triton_repo

# No torch at import time: `cliplit --help` and `export-engine --help` build this parser on the base install.
EXTRA = "export"

if TYPE_CHECKING:
    from cliplit.export.tensorrt_build import BuildSettings  # imports onnx; the parser must build without it

# Options that mean nothing without --engine (refused then, rather than silently ignored).
ENGINE_ONLY_OPTIONS = ("min_shape", "opt_shape", "max_shape", "timing_cache", "version_compatible", "device")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="released name (clip-lit, clip-lit-init, clip-lit-rt) or a .pth path: the released format or a cliplit "
        "checkpoint "
        "(default: %(default)s)",
    )
    parser.add_argument("--onnx", required=True, type=Path, help="where to write the ONNX model")
    parser.add_argument("--io", choices=IO_VARIANTS, default="float", help="ONNX I/O variant (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    parser.add_argument(
        "--outputs",
        default=None,
        metavar="NAMES",
        help="comma-separated outputs of a float model (default: enhanced,light_map); 'enhanced' makes the "
        "single-output model that VapourSynth's vs-mlrt and other single-output hosts need (docs/vapoursynth.md)",
    )
    parser.add_argument(
        "--padding",
        "--variant",
        dest="padding",
        choices=("test", "train"),
        default=None,
        help="padding variant to export (default: the checkpoint's; 'test' for the released weights)",
    )
    parser.add_argument(
        "--verify-image",
        action="append",
        type=Path,
        default=[],
        metavar="IMAGE",
        help="also verify ONNX Runtime against PyTorch on this image (repeatable)",
    )
    parser.add_argument(
        "--opencv-static",
        metavar="HxW",
        default=None,
        help="write a float model with a fixed 1x3xHxW input for OpenCV 4.x and OpenCV 5's classic DNN engine "
        "(docs/opencv.md); the default dynamic model already runs in OpenCV 5's default engine",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_engine_arguments(parser)
    triton_repo.add_triton_arguments(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The TensorRT options; see ``cliplit.export.tensorrt_build.BuildSettings`` for what each does."""
    group = parser.add_argument_group("TensorRT engine")
    group.add_argument(
        "--engine", type=Path, default=None, help="also build a TensorRT engine here (and its sidecar ENGINE.json)"
    )
    group.add_argument(
        "--fp16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="FP16 engine; the final division and clamp stay FP32 (default: on)",
    )
    group.add_argument(
        "--min-shape", default=None, help="smallest input, e.g. 1x3x64x64 (float: NCHW) or 1x64x64x3 (uint8: NHWC)"
    )
    group.add_argument("--opt-shape", default=None, help="input shape TensorRT tunes for (default: 1080p)")
    group.add_argument("--max-shape", default=None, help="largest input (default: 2160x3840, landscape 4K)")
    group.add_argument("--workspace", type=float, default=4.0, help="builder workspace in GiB (default: %(default)s)")
    group.add_argument(
        "--timing-cache",
        type=Path,
        default=None,
        help="timing cache to reuse and update (default: one per TensorRT version and GPU in $CLIPLIT_HOME/tensorrt)",
    )
    group.add_argument(
        "--version-compatible",
        action="store_true",
        help="embed TensorRT's lean runtime so later TensorRT versions and tensorrt_dispatch can run the engine "
        "(docs/tensorrt.md)",
    )
    group.add_argument("--device", type=int, default=0, help="GPU to build the engine on (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from cliplit.core.images import read_image
    from cliplit.export.onnx_export import DEFAULT_OPSET, export_onnx
    from cliplit.train.checkpoint import load_enhancer

    check_writable(args.onnx, args.overwrite)
    settings = engine_settings(args)  # bad engine options fail before the export, not after it
    triton = triton_repo.settings_from_args(args)
    static_size = _static_size(args)
    outputs = _outputs(args)
    checkpoint = load_enhancer(args.weights, padding=args.padding)
    images = [read_image(path)[:, :, ::-1] for path in args.verify_image]
    options = {"opset": args.opset or DEFAULT_OPSET, "verify_images": images, "overwrite": args.overwrite}
    if static_size is None:
        report = export_onnx(checkpoint, args.onnx, io=args.io, outputs=outputs, **options)
    else:
        from cliplit.export.opencv_static import export_opencv_static

        report = export_opencv_static(checkpoint, args.onnx, *static_size, **options)
    for label, diff in report.max_abs_diff.items():
        print(f"  verify {label}: max |ONNX Runtime - PyTorch| = {diff:.3g}")
    print(report.summary())
    engine = None
    if settings is not None:
        from cliplit.export.tensorrt_build import build_engine

        engine = build_engine(report.path, args.engine, settings)
    if triton is not None:
        triton_repo.write_from_args(args, triton, report.path, report.io, engine)
    return 0


def engine_settings(args: argparse.Namespace) -> BuildSettings | None:
    """The builder settings of ``args`` (None without ``--engine``), checked before anything is exported.

    The only place command-line arguments become ``BuildSettings``; the settings validate themselves.
    """
    from cliplit.core.shapes import profile_from_args
    from cliplit.export.tensorrt_build import BuildSettings, check_engine_outputs

    if args.engine is None:
        given = [name for name in ENGINE_ONLY_OPTIONS if getattr(args, name) not in (None, False, 0)]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CliplitError(f"{options} only apply to a TensorRT engine: add --engine OUT.engine")
        return None
    check_engine_outputs(args.engine, args.overwrite)
    return BuildSettings(
        profile=profile_from_args(args.io, args.min_shape, args.opt_shape, args.max_shape),
        fp16=args.fp16,
        workspace_gib=args.workspace,
        timing_cache=args.timing_cache,
        version_compatible=args.version_compatible,
        device=args.device,
        verify_images=tuple(args.verify_image),
        overwrite=args.overwrite,
    )


def _static_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """The validated ``--opencv-static`` size, or None; it only makes sense for a float model without an engine."""
    if args.opencv_static is None:
        return None
    if args.engine is not None or args.io != "float":
        raise CliplitError("--opencv-static writes a float ONNX model for OpenCV; drop --engine and --io uint8")
    from cliplit.export.opencv_static import parse_static_size

    return parse_static_size(args.opencv_static)


def _outputs(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The validated ``--outputs`` choice, or None (all outputs); the engine and the static OpenCV model keep both."""
    if args.outputs is None:
        return None
    from cliplit.core.contract import io_spec

    outputs = io_spec(args.io, args.outputs.split(",")).output_names
    if args.engine is not None or args.opencv_static is not None:
        raise CliplitError(
            "--outputs is for single-output hosts (vs-mlrt, ONNX Runtime's C++ API); --engine and --opencv-static "
            "build from the full model: drop --outputs"
        )
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """The ``export-engine`` console script."""
    parser = argparse.ArgumentParser(prog="export-engine", description=(__doc__ or "").strip())
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        try:
            return run(args)
        except ImportError as error:
            friendly = missing_extra_error(error, "export-engine", EXTRA)
            if friendly is None:
                raise
            raise friendly from error
    except CliplitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
