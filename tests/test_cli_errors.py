"""No Python traceback for a user's mistake, in any CLI (the benchmark scripts included): bad options and bad inputs
exit 2 with a one-line message (argparse's usage lines before its own one-line error are fine).

Each command runs in this process through its ``main``, so an exception that escapes fails the test with its
traceback; combinations that need a model run on small files, so nothing here is slow.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from cliplit.export.cli import main as export_main
from cliplit.runtime.cli import main as cliplit_main

MAINS = {"cliplit": cliplit_main, "export-engine": export_main}

CASES: list[tuple[str, list[str], str]] = [
    ("cliplit", ["enhance", "nope.jpg", "-o", "out"], "no such file or folder"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--threads", "0"], "--threads must be at least 1"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--model", "{junk}"], "not a zip-format PyTorch checkpoint"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--model", "missing.pth"], "weights 'missing.pth' not found"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--backend", "nope"], "argument --backend: invalid choice"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--scale", "-1"], "--scale must be in (0, 1]"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--precision", "fp8"], "argument --precision: invalid choice"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--batch", "0"], "--batch must be at least 1"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--max-memory", "lots"], "not a memory size"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--model", "clip-lit-rt", "--max-memory", "1K"], "runs whole frames"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--temporal-smoothing", "2"], "for videos and live sources"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--model", "x.engine", "--precision", "fp32"], "built with"),
    ("cliplit", ["enhance", "{img}", "-o", "out", "--backend", "openvino", "--device", "1"], "--device 1 does not"),
    ("cliplit", ["train", "--config", "missing.yaml"], "config file missing.yaml not found"),
    ("cliplit", ["train", "--epochs", "-1"], "--backlit is required"),
    ("cliplit", ["distill", "--widths", "0"], "the following arguments are required: --images, --out"),
    ("cliplit", ["bench", "--backends", "nope"], "unknown backend(s) nope"),
    ("cliplit", ["bench", "--sizes", "huge"], "unknown size 'huge'"),
    ("cliplit", ["bench", "--repeats", "0"], "need --repeats >= 1"),
    ("cliplit", ["serve", "--max-batch", "0"], "--max-batch must be at least 1"),
    ("cliplit", ["serve", "--instances", "0"], "--instances must be at least 1"),
    ("cliplit", ["serve", "--max-memory", "abc"], "not a memory size"),
    ("cliplit", ["export", "--weights", "missing.pth", "--onnx", "x.onnx"], "weights 'missing.pth' not found"),
    ("export-engine", ["--weights", "{junk}", "--onnx", "x.onnx"], "not a zip-format PyTorch checkpoint"),
    ("export-engine", ["--io", "nope", "--onnx", "x.onnx"], "argument --io: invalid choice"),
    ("export-engine", ["--outputs", "bogus", "--onnx", "x.onnx"], "a float model can output enhanced, light_map"),
    ("export-engine", ["--onnx", "x.onnx", "--opencv-static", "abc"], "--opencv-static expects HEIGHTxWIDTH"),
    # the benchmark scripts end through the same core/command.run_command
    ("scale_tables", ["scale", "--photos", "missing"], "--photos missing: no such folder"),
    ("student", ["--photos", ".", "--references", "."], "no .jpg photos there"),
    ("student", ["--photos", "{photos}", "--references", "."], "no official output"),
    ("serve_load", ["--model", "clip-lit-rt", "--size", "12y"], "unknown size '12y'"),
    ("tiling_memory", ["--untiled", "12y"], "--untiled '12y': expected HEIGHTxWIDTH"),
    ("tiling_memory", ["--tiled", "64x64:x"], "--tiled '64x64:x': expected HEIGHTxWIDTH:TILE"),
    ("video", ["--photos", "missing", "--out", "out"], "no photos to pan over"),
    ("video", ["--photos", ".", "--out", "out", "--sizes", "huge"], "unknown size 'huge'"),
]


@pytest.mark.parametrize(("command", "argv", "message"), CASES, ids=lambda value: str(value)[:60])
def test_user_mistakes_exit_2_with_a_one_line_message(command, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    image = tmp_path / "img.png"
    _tiny_png(image)
    photos = tmp_path / "photos"  # a test photo without its official output
    photos.mkdir()
    (photos / "a.jpg").write_bytes(image.read_bytes())
    replacements = {"{img}": str(image), "{junk}": str(tmp_path / "junk.pth"), "{photos}": str(photos)}
    for key, value in replacements.items():
        argv = [a.replace(key, value) for a in argv]
    main = MAINS.get(command) or importlib.import_module(f"cliplit.benchmarks.{command}").main
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("error: ") or ": error: " in line]
    assert len(errors) == 1 and message in err, err  # an image's own error follows its summary line


def _tiny_png(path: Path) -> None:
    import cv2
    import numpy as np

    cv2.imwrite(str(path), np.full((40, 48, 3), 90, np.uint8))
