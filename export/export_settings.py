"""The options of export-engine (``cliplit export``) in one dataclass: the ONNX model, the TensorRT engine and the
Triton model repository's path (its configuration is ``triton_repo.TritonRepoSettings``).

The command's flags, their defaults and help derive from these fields (``cliplit.core.cli_settings``). No torch or
onnx here: ``cliplit --help`` builds the parser on the base install.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliplit.core.cli_settings import setting
from cliplit.core.contract import IO_VARIANTS
from cliplit.core.weights import DEFAULT_WEIGHTS

#: the help group of the Triton model repository's options
TRITON_GROUP = "Triton model repository (docs/serving.md)"
#: the option groups of --help, each starting at the field named
GROUPS = {"engine": "TensorRT engine", "triton_repo": TRITON_GROUP}
#: options that mean nothing without --engine (refused then, rather than silently ignored)
ENGINE_ONLY_OPTIONS = ("min_shape", "opt_shape", "max_shape", "timing_cache", "version_compatible", "device")


@dataclass(frozen=True)
class ExportSettings:
    """What export-engine writes and verifies; the engine fields are ``tensorrt_build.BuildSettings``' inputs."""

    weights: str = setting(
        DEFAULT_WEIGHTS,
        "released name (clip-lit, clip-lit-init, clip-lit-rt) or a .pth path: the released format or a cliplit "
        "checkpoint",
    )
    onnx: Path | None = setting(None, "where to write the ONNX model", required=True)  # noqa: RUF009 (a field)
    io: str = setting("float", "ONNX I/O variant", choices=IO_VARIANTS)
    opset: int | None = setting(None, "ONNX opset (default: 17)")
    outputs: str | None = setting(
        None,
        "comma-separated outputs of a float model (default: enhanced,light_map); 'enhanced' makes the "
        "single-output model that VapourSynth's vs-mlrt and other single-output hosts need (docs/vapoursynth.md)",
        metavar="NAMES",
    )
    padding: str | None = setting(
        None,
        "padding variant to export (default: the checkpoint's; 'test' for the released weights)",
        names=("--padding", "--variant"),
        choices=("test", "train"),
    )
    verify_image: tuple[Path, ...] = setting(
        (), "also verify ONNX Runtime against PyTorch on this image (repeatable)", metavar="IMAGE", repeat=True
    )
    opencv_static: str | None = setting(
        None,
        "write a float model with a fixed 1x3xHxW input for OpenCV 4.x and OpenCV 5's classic DNN engine "
        "(docs/opencv.md); the default dynamic model already runs in OpenCV 5's default engine",
        metavar="HxW",
    )
    overwrite: bool = setting(False, "replace existing output files")

    engine: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None, "also build a TensorRT engine here (and its sidecar ENGINE.json)"
    )
    fp16: bool = setting(True, "FP16 engine; the final division and clamp stay FP32")
    min_shape: str | None = setting(None, "smallest input, e.g. 1x3x64x64 (float: NCHW) or 1x64x64x3 (uint8: NHWC)")
    opt_shape: str | None = setting(None, "input shape TensorRT tunes for (default: 1080p)")
    max_shape: str | None = setting(None, "largest input (default: 2160x3840, landscape 4K)")
    workspace: float = setting(4.0, "builder workspace in GiB")
    timing_cache: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None,
        "timing cache to reuse and update (default: one per TensorRT version and GPU in $CLIPLIT_HOME/tensorrt)",
    )
    version_compatible: bool = setting(
        False,
        "embed TensorRT's lean runtime so later TensorRT versions and tensorrt_dispatch can run the engine "
        "(docs/tensorrt.md)",
    )
    device: int = setting(0, "GPU to build the engine on")

    triton_repo: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None,
        "also write a model repository for stock Triton here: DIR/MODEL/config.pbtxt and DIR/MODEL/1/model.onnx "
        "(or model.plan with --engine)",
        metavar="DIR",
    )

    def engine_only_options_given(self) -> list[str]:
        """The engine options set to other than their defaults (which mean nothing without ``engine``)."""
        return [name for name in ENGINE_ONLY_OPTIONS if getattr(self, name) not in (None, False, 0)]
