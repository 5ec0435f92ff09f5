"""The base install (``pip install .``, no extras) runs every shipped model without torch, tiles from an .onnx alone
and refuses a .pth that carries code.

Each test runs `cliplit enhance` in a real base install: a cached environment holding only pyproject.toml's
dependencies, with this checkout built and installed into it non-editably (tests/base_env.py), so the graph templates
and the bundled student come from the package data a user gets, and no package of the dev environment is at hand.
Every run starts from an empty ``$CLIPLIT_HOME``, as on a user's first day: whatever model it needs is built there
from the weights, without torch. The dev process (with torch) exports the .onnx the base install runs and is the
oracle for the outputs, through its own runtime on the same ONNX Runtime release.

The first-run wall times and the memory figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from base_env import BaseEnv, disk_usage_mb, ensure_environment
from conftest import SMALL_PHOTO, photo, reference
from test_pth import _Payload

from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.core.pth import UnsafeWeightsError
from cliplit.runtime.cli import main as cliplit_main
from cliplit.runtime.enhancer import Enhancer

#: what the base install may take on disk (the environment with pip and setuptools, plus the installed checkout)
MAX_SIZE_MB = 600
#: the least fidelity: the teacher against the official inference's reference, tiled against untiled
MIN_PSNR_DB = 50.0
#: a real 4:3 photo of 2048×1536 (3.1 MP), and the 12 MP frame (a phone camera's) made from it
LARGE_PHOTO = "110_51093502029_o"
TWELVE_MP = (4032, 3024)  # width, height
#: the 12 MP run's memory budget and the peak it must stay under (binary units, as --max-memory reads them)
TWELVE_MP_BUDGET = "1G"
TWELVE_MP_MAX_PEAK = int(1.25 * (1 << 30))
#: a budget that tiles the 3 MP frame (untiled it needs about 5 GB)
THREE_MP_BUDGET = "600M"
#: the teacher at 12 MP in tiles takes minutes on two cores
SLOW_TIMEOUT_S = 1200
TIME = Path("/usr/bin/time")

# The child's own peak where /usr/bin/time is missing: VmHWM belongs to the process's address space, which exec starts
# afresh (getrusage's ru_maxrss would not do: Linux carries it over exec, so it would report the forking pytest's).
PEAK_LAUNCHER = """
import json, runpy, sys
sys.argv = ["cliplit", *sys.argv[1:]]
try:
    runpy.run_module("cliplit.runtime.cli", run_name="__main__", alter_sys=True)
finally:
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()
    print(json.dumps({"peak_rss": int(status[0]) * 1024}), file=sys.stderr)
"""

PROBE = """
import importlib, json, sys
report = {}
for name in ("torch", "open_clip"):
    try:
        importlib.import_module(name)
        report[name] = "imported"
    except ImportError as error:
        report[name] = f"{type(error).__name__}: {error}"
import cliplit.runtime.enhance_cli
report["enhance_cli"] = cliplit.runtime.enhance_cli.__file__
report["torch_loaded"] = "torch" in sys.modules
print(json.dumps(report))
"""


@dataclass(frozen=True)
class Run:
    """A finished `cliplit` process: exit status, output, wall time and (when measured) peak RSS in bytes."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int | None = None

    @property
    def log(self) -> str:
        return f"exit {self.code}\n{self.stderr[-4000:]}"


def run_cliplit(
    env: BaseEnv, home: Path, *args: str | os.PathLike[str], measure_peak: bool = False, timeout: float = 600
) -> Run:
    """`cliplit ARGS` in the base install with ``home`` as ``$CLIPLIT_HOME``, run from ``home``'s parent (never the
    checkout: ``python -m`` puts the working directory on the path)."""
    home.mkdir(parents=True, exist_ok=True)
    command = env.cliplit(*map(str, args))
    if measure_peak:
        command = [str(TIME), "-v", *command] if TIME.is_file() else [command[0], "-c", PEAK_LAUNCHER, *command[3:]]
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env.environ(home), cwd=home.parent
    )
    seconds = time.perf_counter() - start
    return Run(done.returncode, done.stdout, done.stderr, seconds, _peak_rss(done.stderr) if measure_peak else None)


def _peak_rss(stderr: str) -> int:
    """The peak RSS in bytes that /usr/bin/time -v or PEAK_LAUNCHER reported at the end of ``stderr``."""
    for line in reversed(stderr.splitlines()):
        if "Maximum resident set size (kbytes):" in line:
            return int(line.rsplit(":", 1)[1]) * 1024
        if line.startswith('{"peak_rss"'):
            return int(json.loads(line)["peak_rss"])
    raise AssertionError(f"no peak RSS reported:\n{stderr[-4000:]}")


@pytest.fixture(scope="module")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> BaseEnv:
    env = ensure_environment(tmp_path_factory.mktemp("base-install"))
    built = "reused" if env.created_s is None else f"built in {env.created_s:.0f} s"
    print(f"\nbase environment {env.root}: {built}; checkout installed in {env.install_s:.1f} s")
    return env


@pytest.fixture(scope="module")
def small_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small photo decoded once here and saved losslessly, so both processes read the same pixels whatever
    their OpenCV's JPEG decoder."""
    path = tmp_path_factory.mktemp("small") / f"{SMALL_PHOTO}.png"
    cv2.imwrite(str(path), read_image(photo(SMALL_PHOTO)))
    return path


def _dev_output(model: str | os.PathLike[str], image: Path) -> np.ndarray:
    """What this process's own runtime makes of ``image`` with ``model``."""
    with Enhancer.open(model, "onnxruntime") as enhancer:
        return enhancer.enhance(read_image(image))


# --- the environment ----------------------------------------------------------------------------------------------


def test_the_base_install_has_no_torch_and_stays_small(base_env, tmp_path):
    done = subprocess.run(
        [str(base_env.python), "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=base_env.environ(tmp_path / "home"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["torch"].startswith("ModuleNotFoundError"), report["torch"]
    assert report["open_clip"].startswith("ModuleNotFoundError"), report["open_clip"]
    assert not report["torch_loaded"]
    assert Path(report["enhance_cli"]).resolve().is_relative_to(base_env.site.resolve()), report["enhance_cli"]
    size = disk_usage_mb(base_env)
    print(f"\nbase install on disk: {size:.0f} MB (environment {base_env.root} + installed checkout)")
    assert size < MAX_SIZE_MB, f"the base install takes {size:.0f} MB, over {MAX_SIZE_MB} MB"


# --- every shipped model, from an empty cache ---------------------------------------------------------------------


def test_the_bundled_student_runs_from_an_empty_cache(base_env, small_png, tmp_path):
    home, out = tmp_path / "home", tmp_path / "out"
    run = run_cliplit(base_env, home, "enhance", small_png, "-o", out, "--model", "clip-lit-rt", "--no-progress")
    assert run.code == 0, run.log
    print(f"\nfirst run, base install, clip-lit-rt on {small_png.name}: {run.seconds:.1f} s")
    assert list((home / "models").glob("weights-*.onnx")), "the student's model was not built in the empty cache"
    assert np.array_equal(read_image(out / small_png.name), _dev_output("clip-lit-rt", small_png))


def test_the_released_weights_and_their_export_run_from_an_empty_cache(
    base_env, small_png, released_weights, float_onnx, tmp_path
):
    outputs = {}
    for label, model in (("weights", released_weights), ("export", float_onnx)):
        home, out = tmp_path / f"home-{label}", tmp_path / f"out-{label}"
        run = run_cliplit(base_env, home, "enhance", small_png, "-o", out, "--model", model, "--no-progress")
        assert run.code == 0, f"--model {model}: {run.log}"
        print(f"\nfirst run, base install, {model.name} on {small_png.name}: {run.seconds:.1f} s")
        outputs[label] = read_image(out / small_png.name)
    assert list((tmp_path / "home-weights" / "models").glob("weights-*.onnx")), "no model built from the .pth"
    assert np.array_equal(outputs["weights"], outputs["export"]), "the .pth and its export differ"
    assert np.array_equal(outputs["export"], _dev_output(float_onnx, small_png)), "the base install differs from here"
    fidelity = psnr(outputs["weights"], read_image(reference(SMALL_PHOTO)))
    print(f"released weights in the base install vs the official reference: {fidelity:.1f} dB")
    assert fidelity >= MIN_PSNR_DB, f"{fidelity:.1f} dB against the official reference"


# --- tiling from an .onnx alone -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_mp_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2048×1536 photo, decoded once here and saved losslessly."""
    path = tmp_path_factory.mktemp("3mp") / f"{LARGE_PHOTO}.png"
    image = read_image(photo(LARGE_PHOTO))
    assert image.shape == (1536, 2048, 3), image.shape
    cv2.imwrite(str(path), image)
    return path


@pytest.mark.slow
def test_a_3mp_frame_tiled_from_an_onnx_alone_equals_the_untiled_run(base_env, float_onnx, three_mp_png, tmp_path):
    """Slow: the teacher runs on a 3 MP frame twice (about half a minute each on two cores)."""
    results = {}
    for label, budget in (("tiled", ("--max-memory", THREE_MP_BUDGET)), ("untiled", ())):
        home, out = tmp_path / f"home-{label}", tmp_path / f"out-{label}"
        args = ("enhance", three_mp_png, "-o", out, "--model", float_onnx, "--no-progress", *budget)
        run = run_cliplit(base_env, home, *args)
        assert run.code == 0, f"{label}: {run.log}"
        assert ("running them in tiles" in run.stderr) == (label == "tiled"), f"{label}: {run.log}"
        print(f"\n3 MP {label} ({' '.join(budget) or 'default budget'}), base install: {run.seconds:.1f} s")
        results[label] = read_image(out / three_mp_png.name)
    split = sorted(path.name for path in (tmp_path / "home-tiled" / "models").glob("tiled-*.onnx"))
    assert len(split) == 2, f"the split was not built from the .onnx in the empty cache: {split}"
    fidelity = psnr(results["tiled"], results["untiled"])
    difference = np.abs(results["tiled"].astype(int) - results["untiled"])
    print(f"3 MP tiled vs untiled: {fidelity:.1f} dB, largest difference {difference.max()} levels")
    assert fidelity >= MIN_PSNR_DB, f"tiled vs untiled: {fidelity:.1f} dB"
    assert difference.max() <= 1, f"tiled vs untiled differ by up to {difference.max()} levels"


@pytest.mark.slow
def test_a_12mp_frame_runs_from_an_onnx_alone_in_bounded_memory(base_env, float_onnx, tmp_path):
    """Slow: the teacher on a 12 MP frame in tiles takes minutes on two cores."""
    if not TIME.is_file() and not Path("/proc/self/status").is_file():
        pytest.skip("measures the peak RSS with /usr/bin/time or /proc (Linux)")
    image = tmp_path / "twelve-mp.png"
    cv2.imwrite(str(image), cv2.resize(read_image(photo(LARGE_PHOTO)), TWELVE_MP, interpolation=cv2.INTER_CUBIC))
    home, out = tmp_path / "home", tmp_path / "out"
    args = ("enhance", image, "-o", out, "--model", float_onnx, "--no-progress", "--max-memory", TWELVE_MP_BUDGET)
    run = run_cliplit(base_env, home, *args, measure_peak=True, timeout=SLOW_TIMEOUT_S)
    assert run.code == 0, run.log
    assert run.peak_rss is not None
    print(
        f"\n12 MP ({TWELVE_MP[0]}x{TWELVE_MP[1]}) tiled from an .onnx alone, --max-memory {TWELVE_MP_BUDGET}, base "
        f"install: {run.seconds:.0f} s, peak RSS {run.peak_rss / (1 << 20):.0f} MiB"
    )
    assert "running them in tiles" in run.stderr, run.log
    assert read_image(out / image.name).shape == (TWELVE_MP[1], TWELVE_MP[0], 3)
    assert run.peak_rss < TWELVE_MP_MAX_PEAK, (
        f"peak RSS {run.peak_rss / (1 << 20):.0f} MiB, over {TWELVE_MP_MAX_PEAK / (1 << 20):.0f} MiB"
    )


# --- a .pth that carries code -------------------------------------------------------------------------------------


@pytest.fixture
def malicious_pth(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint with a real tensor and an object whose unpickling creates a marker file; and the marker."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(2, 2), "meta": _Payload(pathlib.Path.touch, (marker,))}, path)
    return path, marker


#: protocol 2 (torch.save's) pickles ``Path.touch`` as ``getattr(pathlib.Path, "touch")``: the first global it needs
REFUSED_GLOBAL = "builtins.getattr"


def test_a_malicious_pth_is_refused_by_the_base_install(base_env, small_png, malicious_pth, tmp_path):
    path, marker = malicious_pth
    run = run_cliplit(base_env, tmp_path / "home", "enhance", small_png, "-o", tmp_path / "out", "--model", path)
    assert run.code == 2, run.log
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.log
    assert REFUSED_GLOBAL in lines[0] and str(path) in lines[0], run.log
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_malicious_pth_is_refused_where_torch_is_installed(small_png, malicious_pth, tmp_path, capsys):
    from cliplit.train.checkpoint import load_enhancer

    path, marker = malicious_pth
    with pytest.raises(UnsafeWeightsError, match=REFUSED_GLOBAL):
        load_enhancer(path)
    assert not marker.exists()
    argv = ["enhance", str(small_png), "-o", str(tmp_path / "out"), "--model", str(path), "--backend", "torch"]
    code = cliplit_main([*argv, "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("error: ") and REFUSED_GLOBAL in error, error
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the control: an unsafe loader does run this payload
    assert marker.exists()
