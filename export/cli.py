"""export-engine: a checkpoint becomes a verified ONNX model and, with --engine, an FP16 TensorRT engine.

The ONNX file is always written first (and verified against PyTorch), so a machine without a GPU still gets a model
it can run with ONNX Runtime; building the engine then fails fast with a clear message if TensorRT or a GPU is
missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cliplit.core.atomic import check_writable
from cliplit.core.cli_settings import SettingsCli
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.export import triton_repo
from cliplit.export.export_settings import GROUPS, ExportSettings

# No torch at import time: `cliplit --help` and `export-engine --help` build this parser on the base install.
EXTRA = "export"

if TYPE_CHECKING:
    from cliplit.export.tensorrt_build import BuildSettings  # imports onnx; the parser must build without it

EXPORT = SettingsCli(ExportSettings, groups=GROUPS)
#: the settings this command's flags come from (tests/test_cli_help.py checks each field has its flag)
SETTINGS = (EXPORT, triton_repo.OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for options in SETTINGS:
        options.add_to(parser)


def run(args: argparse.Namespace) -> int:
    from cliplit.core.images import read_image
    from cliplit.export.onnx_export import DEFAULT_OPSET, export_onnx
    from cliplit.train.checkpoint import load_enhancer

    export: ExportSettings = EXPORT.from_args(args)
    check_writable(export.onnx, export.overwrite)
    settings = engine_settings(args)  # bad engine options fail before the export, not after it
    triton = triton_repo.settings_from_args(args)
    static_size = _static_size(export)
    outputs = _outputs(export)
    checkpoint = load_enhancer(export.weights, padding=export.padding)
    images = [read_image(path)[:, :, ::-1] for path in export.verify_image]
    options = {"opset": export.opset or DEFAULT_OPSET, "verify_images": images, "overwrite": export.overwrite}
    if static_size is None:
        report = export_onnx(checkpoint, export.onnx, io=export.io, outputs=outputs, **options)
    else:
        from cliplit.export.opencv_static import export_opencv_static

        report = export_opencv_static(checkpoint, export.onnx, *static_size, **options)
    for label, diff in report.max_abs_diff.items():
        print(f"  verify {label}: max |ONNX Runtime - PyTorch| = {diff:.3g}")
    print(report.summary())
    engine = None
    if settings is not None:
        from cliplit.export.tensorrt_build import build_engine

        engine = build_engine(report.path, export.engine, settings)
    if triton is not None:
        triton_repo.write_for_export(export, triton, report.path, report.io, engine)
    return 0


def engine_settings(args: argparse.Namespace) -> BuildSettings | None:
    """The builder settings of ``args`` (None without ``--engine``), checked before anything is exported.

    The only place command-line arguments become ``BuildSettings``; the settings validate themselves.
    """
    from cliplit.core.shapes import profile_from_args
    from cliplit.export.tensorrt_build import BuildSettings, check_engine_outputs

    export: ExportSettings = EXPORT.from_args(args)
    if export.engine is None:
        given = export.engine_only_options_given()
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise CliplitError(f"{options} only apply to a TensorRT engine: add --engine OUT.engine")
        return None
    check_engine_outputs(export.engine, export.overwrite)
    return BuildSettings(
        profile=profile_from_args(export.io, export.min_shape, export.opt_shape, export.max_shape),
        fp16=export.fp16,
        workspace_gib=export.workspace,
        timing_cache=export.timing_cache,
        version_compatible=export.version_compatible,
        device=export.device,
        verify_images=export.verify_image,
        overwrite=export.overwrite,
    )


def _static_size(args: ExportSettings) -> tuple[int, int] | None:
    """The validated ``--opencv-static`` size, or None; it only makes sense for a float model without an engine."""
    if args.opencv_static is None:
        return None
    if args.engine is not None or args.io != "float":
        raise CliplitError("--opencv-static writes a float ONNX model for OpenCV; drop --engine and --io uint8")
    from cliplit.export.opencv_static import parse_static_size

    return parse_static_size(args.opencv_static)


def _outputs(args: ExportSettings) -> tuple[str, ...] | None:
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
    return run_command(lambda: run(args), "export-engine", EXTRA)


if __name__ == "__main__":
    sys.exit(main())
