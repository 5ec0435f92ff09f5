"""The base install (no torch, onnx, open_clip, pyyaml, matplotlib): every command says which extra to install.

As in tests/test_runtime_no_torch.py, a child interpreter gets a meta-path finder that fails those imports the way a
missing package does (ModuleNotFoundError naming the module).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

CHILD = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, sys

    BLOCKED = {"torch", "torchvision", "onnx", "open_clip", "yaml", "matplotlib"}

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    from cliplit.export.cli import main as export_engine
    from cliplit.runtime.cli import main as cliplit

    entry, argv = sys.argv[1], sys.argv[2:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = (export_engine if entry == "export-engine" else cliplit)(argv)
        except SystemExit as exit:  # --help
            status = exit.code
    print(json.dumps({"status": status, "stderr": err.getvalue()}))
    """
)


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["cliplit", "train", "--backlit", "a", "--well-lit", "b", "--out", "{tmp}/run"], "train"),
        (["cliplit", "bench", "--sizes", "64x64", "--out", "{tmp}/bench"], "bench"),
        (["cliplit", "export", "--onnx", "{tmp}/m.onnx"], "export"),
        (["export-engine", "--onnx", "{tmp}/m.onnx"], "export"),
        (["cliplit", "enhance", "{tmp}/in", "-o", "{tmp}/out", "--backend", "torch"], "export"),
    ],
    ids=["train", "bench", "export", "export-engine", "enhance-torch"],
)
def test_every_command_names_its_missing_extra(argv, extra, tmp_path):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    report = _run(argv)
    assert report["status"] == 2, report
    assert f"pip install 'cliplit[{extra}]'" in report["stderr"] and "Traceback" not in report["stderr"]
    assert [path.name for path in tmp_path.iterdir()] == ["in"]  # nothing written


@pytest.mark.parametrize("argv", [["cliplit", "--help"], ["cliplit", "train", "--help"], ["export-engine", "--help"]])
def test_help_works_on_the_base_install(argv):
    assert _run(argv)["status"] == 0


def _run(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
