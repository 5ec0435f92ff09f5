"""`cliplit enhance` on video files: frame count, order, rate, size, audio, codecs, interruption and failures.

The input clip pans across two of the released photos (a scene cut in the middle) with a 440 Hz tone, written by a
plain ffmpeg command (tests/runtime_helpers.py). The expected output is the per-frame enhancement of the decoded
input with the Python API; the output is decoded with OpenCV, independently of the runtime's ffmpeg reader.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from runtime_helpers import decode_all, enhance_on_small_disk, moving_crops, probe, write_clip

from cliplit.core.errors import CliplitError
from cliplit.core.metrics import psnr
from cliplit.runtime.cli import main
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.sinks import VideoSink
from cliplit.runtime.sources import Item
from cliplit.runtime.video_encoding import encoder_settings
from cliplit.runtime.video_read import VideoReader

PHOTOS = ("c5b8b4070688114c602b27933c6699b6", "pexels-daniel-torobekov-5320051")
FRAMES = 24  # 12 per photo, 2.4 s at 10 fps
# Measured on this clip (x264 CRF 18, 4:2:0, 160x120): 36.2-42.2 dB against the per-frame enhancement, while each
# output frame against the previous frame's enhancement gives 13.8-31.8 dB. The bound leaves 3 dB for other builds.
CODEC_PSNR_BOUND = 33.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", moving_crops(PHOTOS))


@pytest.fixture(scope="module")
def expected(clip: Path, float_onnx: Path) -> list[np.ndarray]:
    """Per-frame enhancement of the decoded input, through the public API."""
    with Enhancer.open(float_onnx) as enhancer:
        return [enhancer.enhance(frame) for frame in decode_all(clip)]


def enhance(*argv: object) -> int:
    return main(["enhance", *map(str, argv), "--no-progress"])


def test_video_keeps_frames_rate_size_and_audio(clip, expected, float_onnx, tmp_path):
    out = tmp_path / "out.mp4"
    assert enhance(clip, "-o", out, "--model", float_onnx) == 0
    frames = decode_all(out)
    assert len(frames) == len(expected) == FRAMES
    assert frames[0].shape == (120, 160, 3)
    info = probe(out)
    assert "10 fps" in info and "Audio: aac" in info and "160x120" in info
    same = [psnr(a, b) for a, b in zip(frames, expected, strict=True)]
    assert min(same) >= CODEC_PSNR_BOUND, same
    for index in range(1, FRAMES):  # order: each frame matches its own input's enhancement, not its neighbour's
        assert same[index] > psnr(frames[index], expected[index - 1]) + 3, index
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_lossless_codec_gives_exactly_the_per_frame_enhancement(clip, expected, float_onnx, tmp_path):
    out = tmp_path / "out.mkv"
    assert enhance(clip, "-o", out, "--model", float_onnx, "--codec", "ffv1", "--batch", "3") == 0
    frames = decode_all(out)
    assert len(frames) == FRAMES
    for index, (frame, want) in enumerate(zip(frames, expected, strict=True)):
        assert np.array_equal(frame, want), f"frame {index} differs"
    assert "Audio:" in probe(out)  # AAC copied into Matroska


def test_odd_size_ntsc_rate_without_audio(float_onnx, tmp_path):
    """An odd size comes out as widely playable 4:2:0 High profile, padded by one pixel (its last column and row
    repeated); --pix-fmt yuv444p keeps the exact size for those who want it."""
    frames = [frame[:119, :157] for frame in moving_crops(PHOTOS[:1], frames_per_photo=7)]
    source = tmp_path / "odd.mp4"
    write_clip(source, frames, fps="30000/1001", audio=False, pix_fmt="yuv444p")
    out = tmp_path / "out.mp4"
    assert enhance(source, "-o", out, "--model", float_onnx) == 0
    info = probe(out)
    assert "158x120" in info and "29.97 fps" in info and "Audio" not in info
    assert "h264 (High)" in info and "yuv420p(tv, bt709" in info
    decoded = decode_all(out)
    assert len(decoded) == 7
    for frame in decoded:  # the padding repeats the last column and row (up to 4:2:0 chroma rounding)
        assert np.abs(frame[:, 157].astype(int) - frame[:, 156]).mean() < 3
        assert np.abs(frame[119].astype(int) - frame[118]).mean() < 3
    assert VideoReader(out).info.fps == Fraction(30000, 1001)
    exact = tmp_path / "exact.mp4"
    assert enhance(source, "-o", exact, "--model", float_onnx, "--pix-fmt", "yuv444p", "--max-frames", "2") == 0
    assert "157x119" in probe(exact) and "yuv444p" in probe(exact)


def test_existing_output_is_kept_without_overwrite(clip, float_onnx, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    assert enhance(clip, "-o", out, "--model", float_onnx) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert enhance(clip, "-o", out, "--model", float_onnx, "--overwrite", "--max-frames", "3") == 0
    assert len(decode_all(out)) == 3


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100], ids=["empty", "garbage"])
def test_unreadable_video_is_a_clear_error(content, float_onnx, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    out = tmp_path / "out.mp4"
    assert enhance(bad, "-o", out, "--model", float_onnx) == 2
    assert "not a readable video" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_truncated_video_is_a_clear_error(clip, float_onnx, tmp_path, capsys):
    """An MP4 cut short (a copy interrupted mid-way) loses its index, which ffmpeg writes last."""
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 2 // 3])
    out = tmp_path / "out.mp4"
    assert enhance(cut, "-o", out, "--model", float_onnx) == 2
    assert "cut.mp4: not a readable video" in capsys.readouterr().err
    assert not out.exists()


def test_full_disk_is_a_clear_error_and_leaves_no_file(clip, float_onnx, tmp_path):
    """A real ENOSPC: a 20 kB file system fills up while ffmpeg writes the video."""
    out = tmp_path / "disk" / "out.mp4"
    code, stderr, left = enhance_on_small_disk([clip, "-o", out, "--model", float_onnx], tmp_path / "disk", 20)
    assert code == 2, stderr
    assert f"error: cannot write {out}" in stderr and "No space left on device" in stderr
    assert "nothing was written under that name" in stderr
    assert left == []


def test_file_size_limit_is_a_clear_error_and_leaves_no_file(clip, float_onnx, tmp_path):
    """RLIMIT_FSIZE (works without namespaces): writing fails with EFBIG once the file outgrows 20 kB."""
    out = tmp_path / "out.mp4"
    done = _run_limited([clip, "-o", out, "--model", float_onnx], file_limit=20_000, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"error: cannot write {out}: encoding failed: File too large" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("sig", "message"),
    [(signal.SIGINT, "press Ctrl-C again to abort"), (signal.SIGTERM, "stopping on SIGTERM: finishing the output")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_stops_cleanly_with_a_playable_file(sig, message, float_onnx, tmp_path):
    long_clip = write_clip(tmp_path / "long.mp4", moving_crops(PHOTOS, frames_per_photo=100))
    out = tmp_path / "out.mp4"
    command = [sys.executable, "-m", "cliplit.runtime.cli", "enhance", str(long_clip), "-o", str(out)]
    process = subprocess.Popen(
        [*command, "--model", str(float_onnx), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.*.part.mp4")) and time.monotonic() < deadline:  # the encoder has started
        time.sleep(0.05)
    time.sleep(1.0)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + sig, stderr  # 130 for Ctrl-C, 143 for SIGTERM, as shells report them
    assert f"interrupted by {signal.Signals(sig).name}" in stdout and message in stderr
    if sig == signal.SIGTERM:
        assert "Ctrl-C" not in stderr
    frames = decode_all(out)
    assert 0 < len(frames) < 200
    assert "Audio:" in probe(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "out.mp4"]


def test_sink_fills_gaps_of_dropped_frames(tmp_path):
    """A real-time recording repeats the last frame for each dropped one, so it keeps the source's timing."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    out = tmp_path / "gaps.mkv"
    with VideoSink(out, Fraction(10), settings=encoder_settings(out, "ffv1"), fill_gaps=True) as sink:
        for index, image in zip((0, 3, 4), images, strict=True):
            sink.write(Item(index, image))
        sink.finish()
    frames = decode_all(out)
    assert len(frames) == 5
    for frame, want in zip(frames, [images[0]] * 3 + images[1:], strict=True):
        assert np.array_equal(frame, want)


def test_sink_without_frames_writes_nothing(tmp_path):
    out = tmp_path / "none.mp4"
    with pytest.raises(CliplitError, match="no frames"), VideoSink(out, Fraction(25)) as sink:
        sink.finish()
    assert list(tmp_path.iterdir()) == []


def _run_limited(argv: list[object], *, file_limit: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `cliplit enhance` in a child whose files may not grow beyond ``file_limit`` bytes."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # get EFBIG errors instead of being killed
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_limit}, {file_limit}))\n"
        "from cliplit.runtime.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", code, "enhance", *map(str, argv), "--no-progress"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120, env=dict(os.environ))


def test_sink_tags_and_converts_by_the_input_colour(tmp_path):
    """The output is tagged with the input's colour (here BT.2020 HLG in full range) and converted to YUV by that
    matrix and range, so a player reading the tags gets the colours back (ffmpeg here, 4:4:4 lossless). Converting by
    BT.709 under these tags would bring the saturated patches back up to 14 levels off."""
    from cliplit.runtime.video_colour import VideoColour

    patches = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0], [0, 255, 255], [255, 0, 255], [40, 90, 200]], np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(patches[None], 16, 0), 8, 1))  # 16x48
    colour = VideoColour(color_primaries=9, color_trc=18, colorspace=9, color_range=2, bits=10)
    out = tmp_path / "tagged.mp4"
    with VideoSink(out, Fraction(10), settings=encoder_settings(out, "libx264", crf=0, pix_fmt="yuv444p")) as sink:
        sink.write(Item(0, image, colour=colour))
        sink.finish()
    assert "(pc, bt2020nc/bt2020/arib-std-b67" in probe(out)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(out)]
    decoded = subprocess.run([*command, "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], capture_output=True, check=True)
    frame = np.frombuffer(decoded.stdout, np.uint8).reshape(image.shape)
    assert np.abs(frame.astype(int) - image).max() <= 3
