"""The bench's end-to-end video row: a pan over real photos through the runtime pipeline beside ffmpeg alone.

Fields and bookkeeping only (a tiny clip); how fast is the benchmark's business, not a timed test's.
"""

from __future__ import annotations

import json

import pytest
from conftest import SHARED

from cliplit.benchmarks.video import compare_with_ffmpeg, main, pan_clip, pan_frames
from cliplit.benchmarks.workloads import FrameSize
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.sources import VideoFileSource

PHOTOS = [SHARED.parent / "photos" / f"photo_{index:03d}.jpg" for index in (7, 8)]


def test_the_pan_moves_across_each_photo_in_turn():
    photos = [read_image(path) for path in PHOTOS]
    frames = list(pan_frames(photos, FrameSize.of(64, 48), 6))
    assert len(frames) == 6 and all(frame.shape == (48, 64, 3) for frame in frames)
    assert not (frames[0] == frames[1]).all()  # the view travels
    assert abs(float(frames[2].mean()) - float(frames[3].mean())) > 0  # a cut to the second photo


def test_the_video_row_compares_the_pipeline_with_an_ffmpeg_transcode(tmp_path):
    clip = pan_clip(tmp_path / "pan.mp4", PHOTOS, FrameSize.of(96, 64), seconds=0.5)
    source = VideoFileSource(clip)
    assert source.info.has_audio and (source.info.width, source.info.height) == (96, 64)
    source.close()
    lines: list[str] = []
    row = compare_with_ffmpeg(lambda: Enhancer.open("clip-lit-rt"), clip, tmp_path, rounds=2, log=lines.append)
    assert (row["width"], row["height"], row["frames"]) == (96, 64, 15)
    assert "fast path" in row["enhancer"]
    assert len(row["rounds"]["cliplit"]) == len(row["rounds"]["ffmpeg"]) == 2 and len(lines) == 2
    assert row["fps"] == max(run["fps"] for run in row["rounds"]["cliplit"]) > 0
    assert row["ffmpeg_fps"] == max(run["fps"] for run in row["rounds"]["ffmpeg"]) > 0
    assert row["ratio"] == pytest.approx(row["fps"] / row["ffmpeg_fps"])
    assert set(row["stage_mean_ms"]) == {"decode", "inference", "encode"}
    for name in ("enhanced.mp4", "transcoded.mp4"):  # both outputs: every frame, the audio copied
        output = VideoFileSource(tmp_path / name)
        assert output.info.has_audio and sum(1 for _ in output.items()) == 15
        output.close()


def test_a_comparison_needs_a_round_and_a_clip_needs_photos(tmp_path):
    with pytest.raises(CliplitError, match="at least one round"):
        compare_with_ffmpeg(lambda: Enhancer.open("clip-lit-rt"), tmp_path / "x.mp4", tmp_path, rounds=0)
    with pytest.raises(CliplitError, match="at least one photo"):
        pan_clip(tmp_path / "x.mp4", [], FrameSize.of(64, 48), seconds=1)


def test_the_video_bench_writes_every_row_it_measured(tmp_path):
    out = tmp_path / "results"
    arguments = ["--photos", str(PHOTOS[0].parent), "--sizes", "64x48", "--seconds", "0.2", "--rounds", "1"]
    assert main([*arguments, "--whole-rounds", "1", "--teacher-seconds", "0", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["video"]
    assert [(row["model"], row["width"], row["frames"]) for row in rows] == [
        ("clip-lit-rt", 64, 6),
        ("clip-lit-rt, whole model", 64, 6),
    ]
    assert "fast path" in rows[0]["enhancer"] and "fast path" not in rows[1]["enhancer"]
    table = (out / "results.md").read_text()
    assert "| clip-lit-rt | 64×48 | 6 |" in table and "| clip-lit-rt, whole model | 64×48 | 6 |" in table


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sizes", "95x64"], "even width and height"),
        (["--sizes", "huge"], "unknown size 'huge'"),
        (["--photos", "missing-folder"], "no photos to pan over"),
    ],
)
def test_the_standalone_run_refuses_bad_options_in_one_line(tmp_path, capsys, arguments, message):
    base = {"--photos": str(SHARED / "photos"), "--sizes": "96x64"}
    base.update(dict(zip(arguments[::2], arguments[1::2], strict=True)))
    argv = [item for pair in base.items() for item in pair] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "out").exists()  # nothing measured, nothing written
