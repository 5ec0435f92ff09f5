"""`cliplit enhance` on the videos people actually have: variable frame rate, rotated phone clips, truncated or
damaged files, GIFs, and bad encoder options.

Clips are made here with the ffmpeg binary of imageio-ffmpeg (lavfi's test pattern and a sine tone, tiny sizes so
the network costs little), and read back with that binary too (`-f framemd5` lists every frame's timestamp and a hash
of its data): none of it goes through the runtime's own PyAV reader or writer.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
from runtime_helpers import decode_all, probe

from cliplit.core.images import read_image
from cliplit.runtime.cli import main

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: object) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


def make_clip(path: Path, *, seconds: float = 3, size: str = "48x32", rate: int = 10, audio: bool = True, vf=None):
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    codecs = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    codecs += ["-c:a", "aac", "-shortest"] if audio else []
    filters = ["-vf", vf, "-fps_mode", "vfr"] if vf else []
    faststart = ["-movflags", "+faststart"] if path.suffix == ".mp4" else []
    ffmpeg(*inputs, "-t", seconds, *filters, *codecs, *faststart, path)
    return path


def frame_times(path: Path, stream: str = "v") -> list[tuple[Fraction, str]]:
    """(presentation time in seconds, data hash) of every frame (``v``, decoded) or audio packet (``a``, as stored)."""
    codec = ["-fps_mode", "passthrough"] if stream == "v" else ["-c", "copy"]
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", f"0:{stream}:0", *codec]
    done = subprocess.run(
        [*command, "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    base = Fraction(re.search(r"^#tb 0: (\d+/\d+)$", done.stdout, re.MULTILINE).group(1))
    rows = [line.split(",") for line in done.stdout.splitlines() if line and not line.startswith("#")]
    return [(int(row[2]) * base, row[5].strip()) for row in rows]


def enhance(*argv: object) -> int:
    return main(["enhance", *map(str, argv), "--no-progress"])


def test_variable_frame_rate_keeps_every_timestamp_and_the_audio(float_onnx, tmp_path):
    """30 fps for a second, then 10 fps (what a phone does when the light drops): with the old constant-rate output
    frame 30 moved from 1.00 s to 1.68 s and everything after it slid out of sync with the audio."""
    clip = make_clip(tmp_path / "vfr.mp4", rate=30, vf=r"select='lt(t\,1)+not(mod(n\,3))'")
    times_in = [time for time, _ in frame_times(clip)]
    steps = {round(float(b - a), 3) for a, b in itertools.pairwise(times_in)}
    assert steps == {0.033, 0.1} and len(times_in) == 50  # the input really is VFR
    out = tmp_path / "out.mp4"
    assert enhance(clip, "-o", out, "--model", float_onnx) == 0
    times_out = [time for time, _ in frame_times(out)]
    assert len(times_out) == len(times_in)
    worst = max(abs(float(a - b)) for a, b in zip(times_in, times_out, strict=True))
    assert worst < 1e-4, worst  # every frame at its own time (both files count in 1/15360 s or finer)
    # The audio is the input's, packet for packet, at the same times.
    assert frame_times(out, "a") == frame_times(clip, "a")


def test_rotated_phone_clip_comes_out_upright(float_onnx, tmp_path):
    """A display-rotation tag (how phones store portrait video) is applied, as players do."""
    plain = make_clip(tmp_path / "plain.mp4", seconds=0.5, audio=False)
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", 90, "-i", plain, "-c", "copy", rotated)
    assert "rotation of 90" in probe(rotated)
    out = tmp_path / "out.mkv"
    assert enhance(rotated, "-o", out, "--model", float_onnx, "--codec", "ffv1") == 0
    upright = decode_all(plain)
    got = decode_all(out)
    assert got[0].shape == (48, 32, 3) and "rotation" not in probe(out)
    # Turned 90° counter-clockwise before enhancing (lossless output: only the two decoders' colour conversions
    # differ), and far from the other orientation of the same shape.
    want = np.rot90(upright[0])
    assert np.abs(got[0].astype(int) - read_image_like(want, float_onnx)).mean() < 2
    assert np.abs(got[0].astype(int) - read_image_like(np.rot90(upright[0], 3), float_onnx)).mean() > 20


def read_image_like(frame: np.ndarray, model: Path) -> np.ndarray:
    from cliplit.runtime.enhancer import Enhancer

    with Enhancer.open(model) as enhancer:
        return enhancer.enhance(np.ascontiguousarray(frame)).astype(int)


@pytest.mark.parametrize(("suffix", "damage"), [(".mp4", "cut"), (".mkv", "cut"), (".mp4", "garbage")])
def test_truncated_or_damaged_input_keeps_what_was_recovered(suffix, damage, float_onnx, tmp_path, capsys):
    """A copy cut short, or garbage in the middle: exit 1 and a message with the frames recovered, and those frames
    in a finished, playable file (with the audio up to the same time)."""
    clip = make_clip(tmp_path / f"clip{suffix}")
    data = clip.read_bytes()
    size = len(data)
    bad = tmp_path / f"bad{suffix}"
    if damage == "cut":
        bad.write_bytes(data[: size // 2])
    else:
        bad.write_bytes(data[: size // 3] + bytes((i * 37 + 11) % 256 for i in range(size // 6)) + data[size // 2 :])
    out = tmp_path / "out.mp4"
    assert enhance(bad, "-o", out, "--model", float_onnx) == 1
    err = capsys.readouterr().err
    found = re.search(r"bad\.\w+ is truncated or damaged \((.*)\): (\d+) of about 30 frames were recovered", err)
    assert found, err
    recovered = int(found.group(2))
    assert 5 <= recovered < 30 and f"{out} holds them and plays" in err
    assert len(decode_all(out)) == recovered == len(frame_times(out))
    assert "Audio:" in probe(out)


def test_complete_input_is_not_called_truncated(float_onnx, tmp_path, capsys):
    """Control for the test above: the same clip, whole, is a plain success."""
    clip = make_clip(tmp_path / "clip.mkv", seconds=1)
    assert enhance(clip, "-o", tmp_path / "out.mp4", "--model", float_onnx) == 0
    assert "truncated" not in capsys.readouterr().err


def test_animated_gif_alone_is_a_video_and_in_a_folder_is_reported(float_onnx, tmp_path, capsys):
    gif = tmp_path / "in" / "anim.gif"
    gif.parent.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x24:rate=5", "-vf", "scale=33:25", "-t", 0.8, gif)
    out = tmp_path / "anim.mp4"
    assert enhance(gif, "-o", out, "--model", float_onnx) == 0
    info = probe(out)
    assert "h264 (High)" in info and "yuv420p" in info and "34x26" in info
    assert [time for time, _ in frame_times(out)] == [time for time, _ in frame_times(gif)]  # 4 frames, 0.2 s apart
    cv2.imwrite(str(gif.parent / "still.png"), np.full((24, 32, 3), 60, np.uint8))
    capsys.readouterr()
    assert enhance(gif.parent, "-o", tmp_path / "images", "--model", float_onnx) == 2
    err = capsys.readouterr().err
    assert "1 of 2 images failed" in err and "anim.gif: a GIF or video is enhanced as a video, on its own" in err
    assert read_image(tmp_path / "images" / "still.png").shape == (24, 32, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--crf", "100"], "--crf 100: libx264 takes 0 (best) to 51 (smallest file)"),
        (["--crf", "-1"], "--crf -1: libx264 takes 0"),
        (["--codec", "libvpx-vp9", "--crf", "64"], "--crf 64: libvpx-vp9 takes 0 (best) to 63"),
        (["--codec", "ffv1", "--crf", "10"], "--crf applies to libx264"),
        (["--preset", "fastest"], "--preset fastest: libx264 takes ultrafast, superfast"),
        (["--codec", "ffv1", "--preset", "fast"], "--preset applies to libx264"),
        (["--pix-fmt", "yuv420"], "--pix-fmt yuv420: libx264 takes yuv420p"),
        (["--codec", "nope"], "--codec nope: no such video encoder"),
        (["--codec", "aac"], "--codec aac: encodes audio, not video"),
        (["--codec", "libx264", "-o", "{out}.webm"], "--codec libx264: a .webm file cannot hold it"),
    ],
)
def test_encoder_options_are_checked_before_any_work(options, message, tmp_path, capsys):
    """Checked before the model loads (it does not even exist here) or a frame is decoded."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2, audio=False)
    out = tmp_path / "out"
    argv = [clip, "-o", f"{out}.mp4", "--model", tmp_path / "missing.onnx", *options]
    if "-o" in options:
        argv = [clip, "--model", tmp_path / "missing.onnx", *[o.replace("{out}", str(out)) for o in options]]
    assert enhance(*argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_ffmpeg_failures_name_the_options(tmp_path):
    """Should an encoder still refuse what the checks let through, the message names the options, not ffmpeg's
    internals (here the checks are bypassed to make x264 refuse a preset)."""
    from cliplit.core.errors import CliplitError
    from cliplit.runtime.video_encoding import EncoderSettings
    from cliplit.runtime.video_write import VideoWriter

    settings = EncoderSettings(codec="libx264", crf=18, preset="nonsense", pix_fmt="yuv420p")
    writer = VideoWriter(tmp_path / "x.mp4", 32, 24, time_base=Fraction(1, 10), rate=Fraction(10), settings=settings)
    with pytest.raises(CliplitError, match=r"encoding failed with --codec libx264 --pix-fmt yuv420p --crf 18 "):
        writer.write(np.zeros((24, 32, 3), np.uint8), 0)
    writer.abort()


def audio_packets_that_fail(path: Path) -> tuple[int, list[int]]:
    """How many audio packets ``path`` holds, and which of them PyAV cannot decode (all decoded in order, as a player
    does; PyAV raises where ffmpeg logs "Input buffer exhausted before END element found")."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        count, failed = 0, []
        for packet in container.demux(stream):
            if packet.dts is None:  # the end-of-stream marker
                continue
            try:
                stream.codec_context.decode(packet)
            except av.FFmpegError:
                failed.append(count)
            count += 1
    return count, failed


@pytest.mark.parametrize("suffix", [".mp4", ".webm"], ids=["copied", "re-encoded"])
def test_truncated_input_ends_on_a_whole_audio_packet(suffix, tmp_path, capsys):
    """An MP4 (index at the front) cut inside an audio packet: the demuxer hands over the stump, which no decoder
    reads. The output's audio ends on the last whole packet, so every packet in it decodes; copied (AAC into .mp4) it
    is the input's audio packet for packet up to there, and re-encoded (Opus for .webm), where the stump used to fail
    the whole run, it decodes as well. The video is what any decoder recovers from the cut file."""
    clip = make_clip(tmp_path / "clip.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    count, failed = audio_packets_that_fail(cut)
    assert failed == [count - 1]  # the cut went through the last audio packet
    out = tmp_path / f"out{suffix}"
    assert enhance(cut, "-o", out, "--model", "clip-lit-rt") == 1
    found = re.search(r"(\d+) of about 30 frames were recovered", capsys.readouterr().err)
    assert found
    assert len(frame_times(out)) == int(found.group(1)) == len(frame_times(cut))
    assert audio_packets_that_fail(out)[1] == []
    if suffix == ".mp4":
        assert frame_times(out, "a") == frame_times(cut, "a")[:-1]


def hdr_clip(path: Path, transfer: str, *, mastering: bool = False) -> Path:
    """One second of 10-bit BT.2020 video as phones record HDR (HEVC; H.264 High 10 where this ffmpeg has no x265),
    with transfer function ``transfer`` and, with ``mastering``, HDR10's mastering-display and light-level metadata.
    The tags are set on the frames (setparams): ffmpeg 8 ignores -color_trc/-color_primaries given to the encoder."""
    tags = f"setparams=color_primaries=bt2020:color_trc={transfer}:colorspace=bt2020nc:range=tv,format=yuv420p10le"
    encoders = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    display = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
    if "libx265" in encoders:
        params = ["log-level=error"] + ([f"master-display={display}", "max-cll=1000,400"] if mastering else [])
        video = ["-c:v", "libx265", "-x265-params", ":".join(params)]
    else:
        params = [f"mastering-display={display}", "cll=1000,400"] if mastering else []
        video = ["-c:v", "libx264", "-profile:v", "high10"] + (["-x264-params", ":".join(params)] if params else [])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", 1, "-vf", tags, *video, path)
    return path


@pytest.mark.parametrize(("transfer", "name"), [("arib-std-b67", "HLG"), ("smpte2084", "PQ")])
def test_hdr_clip_keeps_its_colour_tags_and_warns_about_8_bits(transfer, name, tmp_path, capsys):
    """A 10-bit HDR phone clip comes out tagged as it went in (BT.2020, HLG or PQ), not as BT.709 SDR, which players
    would show washed out; the network enhances 8-bit frames, and one warning line says so, and what else is lost
    (a PQ clip's mastering-display metadata). --pix-fmt yuv420p10le writes a 10-bit file with the same tags; an SDR
    clip gets no warning."""
    clip = hdr_clip(tmp_path / "hdr.mp4", transfer, mastering=name == "PQ")
    assert f"yuv420p10le(tv, bt2020nc/bt2020/{transfer}" in probe(clip)
    out = tmp_path / "out.mp4"
    assert enhance(clip, "-o", out, "--model", "clip-lit-rt") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert f"the input is 10-bit {name} video and the network enhances 8-bit frames" in warnings[0]
    assert "out.mp4 is 8-bit yuv420p" in warnings[0] and f"its BT.2020/{name} colour tags are kept" in warnings[0]
    if name == "PQ":
        assert "not carried into out.mp4: mastering-display metadata, content light levels" in warnings[0]
    assert f"yuv420p(tv, bt2020nc/bt2020/{transfer}" in probe(out)
    assert len(frame_times(out)) == 10  # (not OpenCV: its FFmpeg backend takes 7 s to read an HLG-tagged clip)
    ten = tmp_path / "ten.mp4"
    assert enhance(clip, "-o", ten, "--model", "clip-lit-rt", "--pix-fmt", "yuv420p10le") == 0
    assert "ten.mp4 (yuv420p10le) holds 8-bit precision" in capsys.readouterr().err
    assert f"yuv420p10le(tv, bt2020nc/bt2020/{transfer}" in probe(ten)
    sdr = make_clip(tmp_path / "sdr.mp4", seconds=0.3, audio=False)
    assert enhance(sdr, "-o", tmp_path / "sdr-out.mp4", "--model", "clip-lit-rt") == 0
    assert "warning" not in capsys.readouterr().err
