"""The ``cliplitenhance`` GStreamer element through examples/gstreamer/enhance.sh, compared with ``cliplit enhance``.

Runs gst-launch-1.0 as a user would (Debian's GStreamer and its embedded Python, this environment's cliplit through
``VIRTUAL_ENV``). Needs the Debian packages of examples/gstreamer/apt.txt (CI installs them); elsewhere it skips with
the install command, unless ``CLIPLIT_REQUIRE_SYSTEM_PACKAGES=1`` (CI), where a missing tool fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import REPO, photo
from test_cpp_example import _psnr, require_system_packages

EXAMPLE = REPO / "examples" / "gstreamer"
MIN_PSNR = 38.0  # two x264 encodes and two YUV→BGR converters (GStreamer's, FFmpeg's) apart
FRAMES, WIDTH, HEIGHT = 12, 320, 240


def _make_clip(path: Path) -> None:
    """A short pan over a backlit photo, H.264 in MP4, tagged BT.709 like camera footage (untagged video is read
    as BT.601 by FFmpeg and as BT.709 at HD sizes by GStreamer). Slightly blurred: x264 at CRF 18 then keeps it
    nearly intact, so the comparison measures the pipelines, not the codec."""
    image = cv2.imread(str(photo("110_51093502029_o")))
    height, width = image.shape[:2]
    crop_w, crop_h = int(width * 0.8), int(width * 0.8 * HEIGHT / WIDTH)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "12", "x264-params": "colorprim=bt709:transfer=bt709:colormatrix=bt709"}
        for index in range(FRAMES):
            x0, y0 = (width - crop_w) * index // (FRAMES - 1), (height - crop_h) // 2
            frame = cv2.resize(image[y0 : y0 + crop_h, x0 : x0 + crop_w], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
            video = av.VideoFrame.from_ndarray(cv2.GaussianBlur(frame, (0, 0), 1.5), format="bgr24")
            video = video.reformat(format="yuv420p", dst_colorspace=av.video.reformatter.Colorspace.ITU709)
            video.colorspace, video.color_range = 1, 1
            container.mux(stream.encode(video))
        container.mux(stream.encode())


def _frames(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    with av.open(str(path)) as container:
        return [(frame.pts * frame.time_base, frame.to_ndarray(format="bgr24")) for frame in container.decode(video=0)]


def gst_environment(tmp_path: Path) -> dict[str, str]:
    """What a user's shell holds, minus this venv's bin/ on PATH: GStreamer's embedded Python must start as Debian's
    python3 (it locates its standard library from the ``python3`` on PATH); the shim adds ``VIRTUAL_ENV``'s packages.
    A private registry: GStreamer caches which elements a plugin file provides."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir)
    env["VIRTUAL_ENV"] = sys.prefix
    env["GST_REGISTRY"] = str(tmp_path / "gst-registry.bin")
    env.pop("PYTHONHOME", None)
    return env


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_system_packages(EXAMPLE / "apt.txt", "gst-launch-1.0", "gst-inspect-1.0")
    path = tmp_path_factory.mktemp("gst") / "clip.mp4"
    _make_clip(path)
    return path


def test_element_is_registered_with_its_properties(clip, tmp_path):
    env = gst_environment(tmp_path) | {"GST_PLUGIN_PATH": str(EXAMPLE)}
    result = subprocess.run(["gst-inspect-1.0", "cliplitenhance"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(unavailable)" not in result.stdout
    for name in ("model", "backend", "threads", "scale", "temporal-smoothing"):
        assert f"  {name} " in result.stdout


@pytest.mark.slow
def test_enhance_sh_keeps_every_frame_and_matches_cliplit_enhance(clip, tmp_path):
    out, reference = tmp_path / "gst.mp4", tmp_path / "cliplit.mp4"
    env = gst_environment(tmp_path)
    result = subprocess.run(
        ["bash", str(EXAMPLE / "enhance.sh"), "clip-lit-rt", str(clip), str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    command = [str(Path(sys.prefix) / "bin" / "cliplit"), "enhance", "--model", "clip-lit-rt", str(clip)]
    subprocess.run([*command, "-o", str(reference), "--no-progress"], check=True, capture_output=True)
    ours, theirs, source = _frames(out), _frames(reference), _frames(clip)
    assert len(ours) == len(theirs) == len(source) == FRAMES
    assert [t for t, _ in ours] == [t for t, _ in source] == [t for t, _ in theirs]
    psnrs = [_psnr(a, b) for (_, a), (_, b) in zip(ours, theirs, strict=True)]
    assert min(psnrs) >= MIN_PSNR, psnrs


def test_a_bad_model_stops_the_pipeline_with_an_error(clip, tmp_path):
    env = gst_environment(tmp_path)
    missing = tmp_path / "missing.onnx"
    result = subprocess.run(
        ["bash", str(EXAMPLE / "enhance.sh"), str(missing), str(clip), str(tmp_path / "o.mp4")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot load model" in result.stdout + result.stderr
