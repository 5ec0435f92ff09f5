"""The lean runtime without PyTorch: every runtime module imports, and images are enhanced through the CLI and API.

A child interpreter gets a meta-path finder that fails every import of torch, torchvision and open_clip, as on a
machine where only the base package (numpy, opencv, onnxruntime, av, tqdm) is installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import cv2
import numpy as np
from conftest import SMALL_PHOTO, photo

from cliplit.core.images import read_image

CHILD = textwrap.dedent(
    """
    import importlib, importlib.abc, json, os, pkgutil, sys

    BLOCKED = {"torch", "torchvision", "open_clip"}

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (blocked for this test)")
            return None

    sys.meta_path.insert(0, NoTorch())
    image, model, out, fresh_home, weights = sys.argv[1:6]

    import cliplit.runtime
    imported = []
    for info in pkgutil.walk_packages(cliplit.runtime.__path__, "cliplit.runtime."):
        if info.name != "cliplit.runtime.backends.torch":
            importlib.import_module(info.name)
            imported.append(info.name)

    import numpy as np
    from cliplit.runtime.cli import main
    from cliplit.runtime.enhancer import Enhancer
    from cliplit.core.images import read_image

    report = {"imported": imported}
    report["cli"] = main(["enhance", image, "-o", out, "--model", model, "--no-progress"])
    with Enhancer.open(model, scale=0.5, temporal_smoothing=0.5) as enhancer:
        enhancer.enhance(read_image(image))
    with Enhancer.open(model) as enhancer:
        written = read_image(os.path.join(out, os.path.basename(image)[:-4] + ".png"))
        report["cli_equals_api"] = bool(np.array_equal(written, enhancer.enhance(read_image(image))))
    os.environ["CLIPLIT_HOME"] = fresh_home
    report["default_model"] = main(["enhance", image, "-o", out + "-default", "--no-progress"])
    report["student"] = main(["enhance", image, "-o", out + "-rt", "--model", "clip-lit-rt", "--no-progress"])
    report["weights"] = main(["enhance", image, "-o", out + "-pth", "--model", weights, "--no-progress"])
    report["torch_backend"] = main(["enhance", image, "-o", out + "-torch", "--backend", "torch", "--no-progress"])
    report["torch_loaded"] = "torch" in sys.modules
    print(json.dumps(report))
    """
)


def test_runtime_imports_and_runs_without_torch(float_onnx, released_weights, tmp_path):
    image = tmp_path / "crop.jpg"
    cv2.imwrite(str(image), read_image(photo(SMALL_PHOTO))[300:380, 200:300])
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(image),
            str(float_onnx),
            str(tmp_path / "out"),
            str(tmp_path / "home"),
            str(released_weights),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {
        "enhancer",
        "pipeline",
        "enhance_cli",
        "sources",
        "sinks",
        "video_read",
        "video_write",
        "upsample",
        "temporal",
    }
    assert {f"cliplit.runtime.{name}" for name in expected} <= set(report["imported"])
    assert "cliplit.runtime.backends.onnxruntime" in report["imported"]
    assert report["cli"] == 0 and report["cli_equals_api"]
    # An empty cache and no network: the shipped student and a weights file run (their models built without torch);
    # the released name needs its weights file, and the error says where to put it.
    assert report["student"] == 0 and report["weights"] == 0
    written = read_image(tmp_path / "out-pth" / "crop.png")
    assert np.array_equal(written, read_image(tmp_path / "out" / "crop.png"))  # the .pth = its export
    assert report["default_model"] == 2 and "cannot get clip-lit" in done.stderr
    assert report["torch_backend"] == 2 and "--backend torch needs PyTorch" in done.stderr
    assert not report["torch_loaded"]
