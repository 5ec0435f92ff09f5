"""cliplit bench: every backend against the PyTorch baseline, on the same frames, in one run.

Writes DIR/results.json (one record per backend × size × batch, plus the machine), DIR/results.md (the table) and
DIR/latency.png (the chart). Backends that cannot run here are listed with the reason instead of failing the run.
The PyTorch eager FP32 baseline always runs first: every speedup and every PSNR is relative to it.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from cliplit.benchmarks.registry import BACKENDS
from cliplit.core.weights import DEFAULT_WEIGHTS
from cliplit.runtime.upsample import UPSAMPLE_METHODS

# No torch, onnxruntime or matplotlib at import time: `cliplit --help` imports this module (the registry is light).
KNOWN_BACKENDS: tuple[str, ...] = tuple(BACKENDS)
#: the extra of pyproject.toml this command needs (the `cliplit` dispatcher names it when a module is missing)
EXTRA = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to measure")
    what.add_argument(
        "--backends",
        default=",".join(KNOWN_BACKENDS),
        help="comma-separated backends (default: all; those that cannot run here are reported as skipped): "
        + ", ".join(KNOWN_BACKENDS),
    )
    what.add_argument(
        "--sizes",
        default="480p,720p,1080p,2160p",
        help="comma-separated frame sizes: 480p, 720p, 1080p, 1440p, 2160p (4k) or WxH (default: %(default)s)",
    )
    what.add_argument("--batch", default="1", help="batch size(s), comma-separated, e.g. 1,4 (default: 1)")
    what.add_argument(
        "--scale", default=None, metavar="S", help="also run the runtime's --scale modes, e.g. 0.5 or 0.5,0.25"
    )
    what.add_argument(
        "--upsample",
        choices=UPSAMPLE_METHODS,
        default="bilinear",
        help="light-map upsampling of the --scale modes (default: %(default)s)",
    )
    what.add_argument(
        "--weights", default=DEFAULT_WEIGHTS, help="released name or .pth to benchmark (default: %(default)s)"
    )
    what.add_argument("--engine", type=Path, default=None, help="TensorRT engine for the tensorrt backend")
    what.add_argument(
        "--reference-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="also run every backend on the real photos DIR/input/* at full size and compare with the official "
        "outputs DIR/reference/<name>.png (PSNR, peak memory), e.g. the released CLIP-LIT test photos",
    )
    what.add_argument("--threads", type=int, default=None, help="CPU threads for torch, ONNX Runtime and OpenVINO")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--repeats", type=int, default=20, help="timed repeats per record (default: %(default)s)")
    timing.add_argument(
        "--warmup", type=int, default=3, help="untimed calls after the first, per record (default: %(default)s)"
    )
    timing.add_argument(
        "--budget",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="stop repeating once a record has spent this long in timed calls, after at least 2; 0 disables "
        "(default: %(default)s)",
    )
    timing.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="time the backends of a size round by round, so that load changes on a shared machine hit all alike; "
        "this keeps them all loaded at once, which slowed eager PyTorch at 1080p by 60 %% on the 2-core CPU, so by "
        "default each backend is loaded, timed and freed on its own (default: off)",
    )
    timing.add_argument(
        "--peak-size", type=int, default=4096, help="n of the n×n matrix product measuring peak (default: 4096)"
    )
    timing.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    video = parser.add_argument_group("end-to-end video")
    video.add_argument(
        "--video", action="store_true", help="also measure end-to-end video fps (decode + enhance + encode)"
    )
    video.add_argument(
        "--video-size", default=None, help="frame size of the synthetic clip (default: smallest --sizes)"
    )
    video.add_argument("--video-frames", type=int, default=60, help="frames in the synthetic clip (default: 60)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder (default: %(default)s)")
    output.add_argument("--overwrite", action="store_true", help="replace results already in --out")


def run(args: argparse.Namespace) -> int:
    from cliplit.benchmarks.report import check_outputs, write_results
    from cliplit.benchmarks.suite import SuiteConfig, run_suite
    from cliplit.benchmarks.workloads import parse_positive_ints, parse_scales, parse_size, parse_sizes
    from cliplit.core.errors import CliplitError

    if args.repeats < 1 or args.warmup < 0 or args.video_frames < 1 or args.peak_size < 16 or args.budget < 0:
        raise CliplitError("need --repeats >= 1, --warmup >= 0, --video-frames >= 1, --peak-size >= 16, --budget >= 0")
    config = SuiteConfig(
        backends=[name.strip() for name in args.backends.split(",") if name.strip()],
        sizes=parse_sizes(args.sizes),
        batches=parse_positive_ints(args.batch, "--batch"),
        scales=parse_scales(args.scale) if args.scale else [],
        upsample=args.upsample,
        warmup=args.warmup,
        repeats=args.repeats,
        budget_s=args.budget or None,
        weights=args.weights,
        engine=args.engine,
        threads=args.threads,
        peak_n=args.peak_size,
        seed=args.seed,
        video=args.video,
        video_size=parse_size(args.video_size) if args.video_size else None,
        video_frames=args.video_frames,
        interleave=args.interleave,
        reference_dir=args.reference_dir,
    )
    if config.video:
        from cliplit.benchmarks.video import check_clip_size

        check_clip_size(config.video_size or config.sizes[0])
    if config.reference_dir is not None:
        from cliplit.benchmarks.photos import reference_photos

        reference_photos(config.reference_dir)  # a wrong folder fails now, not after the timing
    check_outputs(args.out, args.overwrite)  # before minutes of measuring, not after
    results = run_suite(config)
    results["command"] = command_line(args)
    for path in write_results(results, args.out, overwrite=args.overwrite):
        print(f"wrote {path}")
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The run as one explicit ``cliplit bench`` command (every option spelled out), to reproduce it exactly."""
    parts = ["cliplit", "bench"]
    for key, value in sorted(vars(args).items()):
        if key.startswith("_") or key == "command" or value is None or value is False:
            continue
        option = "--" + key.replace("_", "-")
        parts += [option] if value is True else [option, str(value)]
    return shlex.join(parts)
