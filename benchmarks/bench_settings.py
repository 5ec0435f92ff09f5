"""The options of ``cliplit bench`` in one dataclass: what to measure, how to time it, where the results go.

The command's flags, their defaults and help derive from these fields (``cliplit.core.cli_settings``); the options
are kept as typed (``--sizes 720p,1080p``) so that the recorded command reproduces the run, and ``suite_config``
parses them into what the suite measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cliplit.benchmarks.registry import BACKENDS
from cliplit.core.cli_settings import setting
from cliplit.core.errors import CliplitError
from cliplit.core.weights import DEFAULT_WEIGHTS
from cliplit.runtime.upsample import UPSAMPLE_METHODS

if TYPE_CHECKING:
    from cliplit.benchmarks.suite import SuiteConfig

#: the option groups of --help, each starting at the field named
GROUPS = {"backends": "what to measure", "repeats": "timing", "video": "end-to-end video", "out": "output"}


@dataclass(frozen=True)
class BenchSettings:
    """Everything ``cliplit bench`` is asked to do, as given on the command line."""

    backends: str = setting(
        ",".join(BACKENDS),
        "comma-separated backends (default: all; those that cannot run here are reported as skipped): "
        + ", ".join(BACKENDS),
    )
    sizes: str = setting(
        "480p,720p,1080p,2160p", "comma-separated frame sizes: 480p, 720p, 1080p, 1440p, 2160p (4k) or WxH"
    )
    batch: str = setting("1", "batch size(s), comma-separated, e.g. 1,4")
    scale: str | None = setting(None, "also run the runtime's --scale modes, e.g. 0.5 or 0.5,0.25", metavar="S")
    upsample: str = setting("bilinear", "light-map upsampling of the --scale modes", choices=UPSAMPLE_METHODS)
    weights: str = setting(DEFAULT_WEIGHTS, "released name or .pth to benchmark")
    engine: Path | None = setting(None, "TensorRT engine for the tensorrt backend")  # noqa: RUF009 (a field)
    reference_dir: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None,
        "also run every backend on the real photos DIR/input/* at full size and compare with the official "
        "outputs DIR/reference/<name>.png (PSNR, peak memory), e.g. the released CLIP-LIT test photos",
        metavar="DIR",
    )
    threads: int | None = setting(None, "CPU threads for torch, ONNX Runtime and OpenVINO")
    repeats: int = setting(20, "timed repeats per record")
    warmup: int = setting(3, "untimed calls after the first, per record")
    budget: float = setting(
        30.0,
        "stop repeating once a record has spent this long in timed calls, after at least 2; 0 disables",
        metavar="SECONDS",
    )
    interleave: bool = setting(
        False,
        "time the backends of a size round by round, so that load changes on a shared machine hit all alike; "
        "this keeps them all loaded at once, which slowed eager PyTorch at 1080p by 60 %% on the 2-core CPU, so by "
        "default each backend is loaded, timed and freed on its own",
        negatable=True,
    )
    peak_size: int = setting(4096, "n of the n×n matrix product measuring peak")
    seed: int = setting(0, "seed of the random inputs")
    video: bool = setting(
        False,
        "also measure end-to-end video: clip-lit-rt (and the teacher, on a shorter clip) through decode + enhance + "
        "encode beside a plain ffmpeg transcode of the same clip, as fps and their ratio",
    )
    video_size: str | None = setting(None, "frame size of the pan clip (default: first --sizes)")
    video_frames: int = setting(60, "frames in the pan clip (at 30 fps)")
    video_photos: Path | None = setting(  # noqa: RUF009 (setting makes a field)
        None,
        "folder of held-out photos the clip pans over (needed by --video), e.g. ../shared/photos; never the "
        "evaluation photos",
        metavar="DIR",
    )
    video_rounds: int = setting(2, "interleaved rounds of cliplit and ffmpeg on the clip, best of each kept")
    video_teacher_frames: int = setting(15, "frames of the teacher's (slow) clip; 0 skips the teacher")
    out: Path = setting(Path("bench-results"), "output folder")  # noqa: RUF009 (setting makes a field)
    overwrite: bool = setting(False, "replace results already in --out")

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0 or self.video_frames < 1 or self.peak_size < 16 or self.budget < 0:
            raise CliplitError(
                "need --repeats >= 1, --warmup >= 0, --video-frames >= 1, --peak-size >= 16, --budget >= 0"
            )
        if self.video_rounds < 1 or self.video_teacher_frames < 0:
            raise CliplitError("need --video-rounds >= 1 and --video-teacher-frames >= 0")
        if self.video and self.video_photos is None:
            raise CliplitError("--video needs --video-photos DIR: held-out photos to pan over, e.g. ../shared/photos")

    def suite_config(self) -> SuiteConfig:
        """What the suite measures: the options parsed (a bad size, batch or scale fails here, before any work)."""
        from cliplit.benchmarks.suite import SuiteConfig
        from cliplit.benchmarks.workloads import parse_positive_ints, parse_scales, parse_size, parse_sizes

        return SuiteConfig(
            backends=[name.strip() for name in self.backends.split(",") if name.strip()],
            sizes=parse_sizes(self.sizes),
            batches=parse_positive_ints(self.batch, "--batch"),
            scales=parse_scales(self.scale) if self.scale else [],
            upsample=self.upsample,
            warmup=self.warmup,
            repeats=self.repeats,
            budget_s=self.budget or None,
            weights=self.weights,
            engine=self.engine,
            threads=self.threads,
            peak_n=self.peak_size,
            seed=self.seed,
            video=self.video,
            video_size=parse_size(self.video_size) if self.video_size else None,
            video_frames=self.video_frames,
            video_photos=self.video_photos,
            video_rounds=self.video_rounds,
            video_teacher_frames=self.video_teacher_frames,
            interleave=self.interleave,
            reference_dir=self.reference_dir,
        )
