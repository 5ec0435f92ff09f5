"""The end-to-end part of a bench run: a synthetic clip decoded, enhanced and encoded by the runtime's pipeline.

Only runtime backends run it (the ``--scale`` bases: a bench-only variant is no pipeline users run), through the
real ``Enhancer`` at each requested ``--scale``, so its frames per second are what ``cliplit enhance`` would reach on
this machine with that backend.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cliplit.benchmarks.machine import OtherLoad
from cliplit.benchmarks.records import reason_of
from cliplit.benchmarks.registry import BACKENDS, SCALE_BASES, BackendEntry, BenchContext
from cliplit.benchmarks.workloads import FrameSize


def run_videos(
    entries: list[BackendEntry],
    skipped: dict[str, str],
    context: BenchContext,
    clip_size: FrameSize,
    frames: int,
    scales: list[float],
    upsample: str,
    workdir: Path,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The clip (``frames`` frames at ``clip_size``) on every requested runtime backend that could run here, at
    scale 1 and each of ``scales``; a backend's failure is its result, not the run's."""
    from cliplit.benchmarks.video import measure_video, synthetic_clip
    from cliplit.runtime.enhancer import Enhancer

    clip = synthetic_clip(workdir / "clip.mp4", clip_size, frames)
    requested = {entry.name for entry in entries}
    results = []
    for name in (name for name in SCALE_BASES if name in requested and name not in skipped):
        for scale in dict.fromkeys([1.0, *scales]):
            label = name if scale == 1.0 else f"{name}@scale{scale:g}"
            result: dict[str, Any] = {"backend": label, "size": clip_size.label, "width": clip_size.width}
            result.update(height=clip_size.height, scale=scale, status="ok", reason=None)
            contention = OtherLoad()
            try:
                with Enhancer(BACKENDS[name].build(context), scale=scale, upsample=upsample) as enhancer:
                    contention.start()
                    result.update(measure_video(enhancer, clip, workdir / "enhanced.mp4"))
                    result["other_load_cores"] = contention.stop()
            except Exception as error:  # one backend's failure is its result, not the run's
                result.update(status="error", reason=reason_of(error))
                log(f"video {label}: error {error}")
            else:
                log(f"video {label} {clip_size.label}: {result['frames']} frames, {result['fps']:.2f} fps end to end")
            results.append(result)
    return results
