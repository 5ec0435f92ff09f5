"""Peak memory of untiled and tiled inference, per pixel: the calibration of :mod:`cliplit.runtime.tiling`.

Each measurement runs in a fresh Python process (peak RSS is per process and never goes down): it opens the model,
makes a random frame (memory does not depend on content), notes its resident memory, enhances the frame once and
reports the growth of its peak RSS (Linux's VmHWM). Untiled, the growth is divided by the frame's pixels
(``UNTILED_BYTES_PER_PIXEL``); tiled, by the pixels of the largest window (a tile grown by both halos), after taking
away the whole-frame output (``TILED_BYTES_PER_PIXEL``). Run ``python -m cliplit.benchmarks.tiling_memory`` (a few
minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass

from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.runtime.models import ensure_onnx

_CHILD = """
import json, resource, sys, time
import numpy as np
from cliplit.runtime.backends import open_backend
from cliplit.runtime.backends.onnxruntime import OnnxRuntimeOptions
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.memory import resident_memory
from cliplit.runtime.tiling import open_tiling, plan_tiles

model, height, width, tile, threads = json.loads(sys.argv[1])
frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
options = OnnxRuntimeOptions(threads=threads)
tiling = open_tiling(model, options, tile=tuple(tile)) if tile else None
enhancer = Enhancer(open_backend(model, options), tiling=tiling)
window = 0
if tiling is not None:  # the window the head runs on: the largest tile grown by both halos
    halo = tiling.split.head_halo + tiling.split.tail_halo
    tiles = plan_tiles(height, width, tiling.tile)
    window = min(height, max(r.height for r in tiles) + 2 * halo) * min(width, max(r.width for r in tiles) + 2 * halo)
before = resident_memory()
start, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
enhancer.enhance(frame)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024  # ru_maxrss survives exec
print(json.dumps({"before": before, "peak": peak, "seconds": seconds, "cpu": cpu, "window": window}))
"""


@dataclass(frozen=True)
class MemoryMeasurement:
    """One enhance call's peak RSS growth."""

    height: int
    width: int
    tile: tuple[int, int] | None
    before: int
    peak: int
    seconds: float
    cpu: float
    window: int

    @property
    def bytes_per_pixel(self) -> float:
        """Growth per frame pixel (untiled) or per pixel of the largest window, output frame excluded (tiled)."""
        growth = self.peak - self.before
        if self.tile is None:
            return growth / (self.height * self.width)
        return (growth - 3 * self.height * self.width) / self.window


def measure(model: str, height: int, width: int, tile: tuple[int, int] | None, threads: int) -> MemoryMeasurement:
    """Enhance one random ``height`` × ``width`` frame in a fresh process, untiled or in tiles of ``tile``."""
    argument = json.dumps([model, height, width, list(tile) if tile else None, threads])
    done = subprocess.run([sys.executable, "-c", _CHILD, argument], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryMeasurement(height, width, tile, **result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--untiled", nargs="*", default=["512x512", "1024x1024", "1536x2048"], metavar="HxW")
    parser.add_argument("--tiled", nargs="*", default=["1536x2048:512", "2048x2048:1024"], metavar="HxW:TILE")
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args), "python -m cliplit.benchmarks.tiling_memory", "bench")


def _height_width(text: str, option: str) -> tuple[int, int]:
    """``HxW`` as (height, width), or a one-line error naming the option."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise CliplitError(f"{option} {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 1024x1024")
    return int(parts[0]), int(parts[1])


def _run(args: argparse.Namespace) -> int:
    cases: list[tuple[int, int, tuple[int, int] | None]] = []
    for text in args.untiled:
        cases.append((*_height_width(text, "--untiled"), None))
    for text in args.tiled:
        size, _, tile = text.partition(":")
        if not tile.isdigit() or int(tile) < 1:
            raise CliplitError(f"--tiled {text!r}: expected HEIGHTxWIDTH:TILE, e.g. 2048x2048:1024")
        cases.append((*_height_width(size, "--tiled"), (int(tile), int(tile))))
    model = str(ensure_onnx("clip-lit", "float"))
    print("| frame | tiles | before | peak | growth per pixel | wall time | CPU time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for height, width, tile in cases:
        m = measure(model, height, width, tile, args.threads)
        tiles = f"{tile[1]}x{tile[0]} (window {m.window / 1e6:.2f} MP)" if tile else "untiled"
        print(
            f"| {width}x{height} | {tiles} | {m.before / 2**20:.0f} MiB | {m.peak / 2**20:.0f} MiB | "
            f"{m.bytes_per_pixel:.0f} B | {m.seconds:.1f} s | {m.cpu:.1f} s |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
