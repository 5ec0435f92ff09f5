"""Temporaries of killed runs: removed on the next write into their folder, and nothing else is touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cliplit.core import atomic
from cliplit.core.images import write_image

WRITER = """
import sys, time
from cliplit.core.atomic import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a video")
    print(tmp.name, flush=True)
    time.sleep(60)
"""


def killed_writer(target: Path) -> Path:
    """Start a writer, SIGKILL it half-way: its temporary file stays behind, as after a real crash."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    name = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    left = target.parent / name
    assert left.is_file()
    return left


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_killed_runs_leave_nothing_after_the_next_write(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_swept", set())
    out = tmp_path / "out"
    out.mkdir()
    killed = killed_writer(out / "clip.mp4")
    # A writer still running (this process) keeps its file, whatever its age.
    live = aged(_touch(out / f".clip.{atomic._HOST}-{os.getpid()}-abcd1234.part.mp4"), 7200)
    other_host = out / f".clip.0badc0de-{killed.name.split('-')[1]}-abcd1234.part.mp4"
    other_host.write_bytes(b"a writer on another machine sharing the folder")
    legacy_old = aged(_touch(out / ".clip.k2j4h5g6.part.mp4"), 7200)
    legacy_new = _touch(out / ".clip.q9w8e7r6.part.mp4")  # maybe an older cliplit still running
    scratch = out / ".cliplit-ab12cd34"
    scratch.mkdir()
    _touch(scratch / "video.mp4")
    aged(scratch, 7200)
    users = [_touch(out / ".notes.part"), _touch(out / ".hidden"), aged(_touch(out / "photo.part.jpg"), 7200)]
    write_image(out / "a.png", np.zeros((4, 4, 3), np.uint8))
    left = {path.name for path in out.iterdir()}
    assert killed.name not in left and legacy_old.name not in left and scratch.name not in left
    assert {live.name, other_host.name, legacy_new.name, "a.png", *(p.name for p in users)} == left


def test_each_folder_is_swept_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_swept", set())
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    killed = killed_writer(tmp_path / "b.png")
    write_image(tmp_path / "c.png", np.zeros((4, 4, 3), np.uint8))
    assert killed.exists()  # swept before it was left; the next run cleans it
    assert atomic.remove_stale_temporaries(tmp_path) == [killed]


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path
