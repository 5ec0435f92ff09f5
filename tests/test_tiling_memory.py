"""Bounded memory: a large frame runs through `cliplit enhance` under a limit that the untiled path exceeds, and gives
the untiled output.

Both runs are separate processes (peak RSS is per process and never goes down), each reporting its own peak (Linux's
VmHWM); the frame is a real photo upscaled by the test. The exactness of tiling itself is tested on smaller
frames in test_tiling.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO

from cliplit.core.images import read_image
from cliplit.runtime.memory import parse_memory_size
from cliplit.runtime.models import ensure_split

PHOTO = REPO.parent / "shared" / "photos" / "photo_001.jpg"  # 1280×960, not an evaluation photo
#: a limit the untiled run of the frame below exceeds by far (it needs about 1.1 GB), with room for tiles
LIMIT = "400M"
SIZE = (1024, 600)  # width, height: 0.6 MP, neither side divisible by 6 nor by the tiles

# The process's own peak: VmHWM belongs to its address space, which exec starts afresh. (getrusage's ru_maxrss would
# not do: Linux carries it over exec, so it would report the forking pytest process's size.)
_REPORT_PEAK = (
    "import sys\n"
    "from cliplit.runtime.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "status = open('/proc/self/status').read().split('VmHWM:')[1].split()\n"
    "print('peak-rss', int(status[0]) * 1024)\n"
    "sys.exit(code)\n"
)


def _enhance(image: Path, output: Path, model: Path, max_memory: str) -> tuple[int, str]:
    """`cliplit enhance` in a fresh process; its peak RSS in bytes and its stderr."""
    command = [sys.executable, "-c", _REPORT_PEAK, "enhance", str(image), "-o", str(output), "--model", str(model)]
    command += ["--backend", "onnxruntime", "--threads", "2", "--no-progress", "--max-memory", max_memory]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    peak = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("peak-rss"))
    return peak, done.stderr


@pytest.fixture(scope="module")
def split_cached(released_enhancer):
    """The split model in the test cache, where the `cliplit enhance` processes look for it."""
    return ensure_split("clip-lit")


def test_large_frame_runs_in_tiles_under_a_limit_the_untiled_path_exceeds(tmp_path, float_onnx, split_cached):
    if not Path("/proc/self/status").is_file():
        pytest.skip("reads the peak RSS from /proc (Linux)")
    if not PHOTO.is_file():
        pytest.fail(f"{PHOTO} is missing: tests need ../shared/photos beside the checkout")
    image = tmp_path / "large.png"
    cv2.imwrite(str(image), cv2.resize(read_image(PHOTO), SIZE, interpolation=cv2.INTER_CUBIC))
    limit = parse_memory_size(LIMIT)

    untiled_peak, untiled_log = _enhance(image, tmp_path / "untiled.png", float_onnx, "64G")
    tiled_peak, tiled_log = _enhance(image, tmp_path / "tiled.png", float_onnx, LIMIT)

    assert "tiles" not in untiled_log and "running them in tiles" in tiled_log
    assert untiled_peak > 2 * limit, f"untiled peak {untiled_peak >> 20} MiB: the frame is too small to show anything"
    assert tiled_peak <= limit, f"tiled peak {tiled_peak >> 20} MiB over the {LIMIT} limit"
    untiled, tiled = read_image(tmp_path / "untiled.png"), read_image(tmp_path / "tiled.png")
    difference = np.abs(tiled.astype(int) - untiled)
    # the untiled path rounds the model's float output, the tiled one applies the light map in 8-bit levels: the
    # same value up to float rounding, i.e. one level where the value sits on a rounding boundary
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-4
