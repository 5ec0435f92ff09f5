"""`cliplit bench` end to end, tiny: one small size, two repeats, CPU backends, --scale and --video (a pan clip).

A smoke run proves the harness works and its numbers are consistent with each other; it never asserts a speed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import pytest
from conftest import SHARED, SMALL_PHOTO, photo

from cliplit.core.contract import model_input_from_bgr
from cliplit.core.images import read_image
from cliplit.runtime.backends import installed
from cliplit.runtime.backends.openvino import choose_precision, cpu_flags
from cliplit.runtime.cli import main


def _native_bf16() -> bool:
    """Whether openvino-bf16 can run here (else it is skipped with the reason, as on any such machine)."""
    if not installed("openvino"):
        return False
    import openvino

    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return choose_precision(None, "CPU", capabilities, cpu_flags()).precision == "bf16"


RECORD_FIELDS = {
    "backend",
    "size",
    "batch",
    "median_ms",
    "p95_ms",
    "fps",
    "speedup_vs_torch",
    "psnr_vs_fp32",
    "gflops_per_frame",
    "achieved_gflops",
    "percent_of_peak",
    "status",
}
# torch is added first; openvino-bf16 is skipped with its reason on a CPU without native bf16
BACKENDS = "onnxruntime,torch-channels-last,onnxruntime-uint8,openvino,openvino-bf16,torch-fp16,tensorrt"
OPENVINO, NATIVE_BF16 = installed("openvino"), _native_bf16()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, released_weights: Path) -> Path:
    """A reference folder of one real crop whose "official output" is the eager FP32 network's (the official
    inference), made here because the real official outputs exist only for the full photos."""
    from cliplit.benchmarks.fidelity import quantised_reference
    from cliplit.runtime.backends.torch import TorchBackend, TorchOptions

    folder = tmp_path_factory.mktemp("photos")
    (folder / "input").mkdir()
    (folder / "reference").mkdir()
    crop = read_image(photo(SMALL_PHOTO))[300:396, 200:328]
    cv2.imwrite(str(folder / "input" / "crop.png"), crop)
    enhanced = TorchBackend(released_weights, TorchOptions(cpu_only=True)).run(
        model_input_from_bgr("float", crop[None])
    )
    cv2.imwrite(str(folder / "reference" / "crop.png"), quantised_reference(enhanced["enhanced"])[0])
    return folder


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, cliplit_home: Path, photos: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench") / "results"
    argv = ["bench", "--backends", BACKENDS, "--sizes", "96x64", "--batch", "1,2", "--repeats", "2"]
    argv += ["--warmup", "0", "--scale", "0.5", "--video", "--video-frames", "6", "--peak-size", "64"]
    argv += ["--video-photos", str(SHARED.parent / "photos"), "--video-rounds", "1", "--video-teacher-frames", "2"]
    argv += ["--reference-dir", str(photos), "--out", str(out)]
    assert main(argv) == 0
    return out, json.loads((out / "results.json").read_text())


def records_of(results: dict, backend: str) -> list[dict]:
    return [r for r in results["records"] if r["backend"] == backend]


def test_every_backend_and_batch_has_a_complete_record(smoke):
    _, results = smoke
    assert results["schema"] == "cliplit-bench/1"
    for batch in (1, 2):
        assert next(r for r in results["records"] if r["batch"] == batch)["backend"] == "torch", "baseline first"
    expected = {"torch", "onnxruntime", "torch-channels-last", "onnxruntime-uint8", "onnxruntime@scale0.5"}
    if OPENVINO:
        expected |= {"openvino", "openvino@scale0.5"}
    if NATIVE_BF16:
        expected |= {"openvino-bf16", "openvino-bf16@scale0.5"}
    assert {r["backend"] for r in results["records"]} == expected
    for record in results["records"]:
        assert record.keys() >= RECORD_FIELDS
        assert record["status"] == "ok", record["reason"]
        assert (record["width"], record["height"]) == (96, 64) and record["batch"] in (1, 2)
        assert record["repeats"] == 2 and 0 < record["median_ms"] <= record["p95_ms"]
        assert record["warmup"] == (0 if record["batch"] == 1 else 1), "a new batch shape is warmed up first"
        assert 0.0 <= record["other_load_cores"] <= os.cpu_count(), "other processes' load, in cores, is recorded"
        assert record["peak_rss_mib"] >= record["rss_before_mib"] > 0, "peak memory from the backend's loading on"
    assert len(results["records"]) == 2 * len(expected)


def test_derived_numbers_come_from_the_same_run(smoke):
    _, results = smoke
    baseline = {r["batch"]: r["median_ms"] for r in records_of(results, "torch")}
    for record in results["records"]:
        batch, median = record["batch"], record["median_ms"]
        assert record["speedup_vs_torch"] == pytest.approx(baseline[batch] / median)
        assert record["fps"] == pytest.approx(batch * 1000 / median)
        assert record["achieved_gflops"] == pytest.approx(record["gflops_per_frame"] * batch / (median / 1000))
        peaks = [p for p in results["peak"] if p["device"] == "cpu" and p["error"] is None]
        peak = max(p["gflops"] for p in peaks if p["dtype"] == record["precision"])  # its own precision's peak
        assert record["percent_of_peak"] == pytest.approx(100 * record["achieved_gflops"] / peak)
    precisions = {r["backend"]: r["precision"] for r in results["records"]}
    assert precisions.get("openvino", "float32") == "float32"
    assert precisions.get("openvino-bf16", "bfloat16") == "bfloat16"
    if NATIVE_BF16:  # measured through OpenVINO, the engine the bf16 backend runs on
        assert {(p["implementation"], p["dtype"]) for p in results["peak"]} >= {("openvino", "bfloat16")}
    # ~555 kFLOP per pixel at full resolution; the --scale 0.5 network sees a quarter of the pixels
    full = records_of(results, "onnxruntime")[0]["gflops_per_frame"]
    assert full == pytest.approx(96 * 64 * 555e3 / 1e9, rel=0.01)
    scaled = records_of(results, "onnxruntime@scale0.5")[0]
    assert (scaled["network_width"], scaled["network_height"]) == (48, 32)
    assert scaled["gflops_per_frame"] == pytest.approx(full / 4, rel=0.02)


def test_fidelity_against_the_fp32_reference(smoke):
    _, results = smoke
    (torch,) = {r["psnr_vs_fp32"] for r in records_of(results, "torch")}
    assert torch is None and all(r["max_abs_diff_vs_fp32"] == 0.0 for r in records_of(results, "torch"))
    for name in ("onnxruntime", "torch-channels-last", "openvino"):  # FP32 backends: rounding-level differences only
        for record in records_of(results, name):  # (none for openvino where it is not installed)
            assert record["psnr_vs_fp32"] is None or record["psnr_vs_fp32"] > 100, name
    for record in records_of(results, "onnxruntime-uint8"):  # the same frames, rounded as the contract rounds
        assert record["max_abs_diff_vs_fp32"] <= 1 and record["fidelity_unit"] == "uint8 levels"
    scaled = records_of(results, "onnxruntime@scale0.5")[0]
    assert 20 < scaled["psnr_vs_fp32"] < 60, "half resolution is an approximation, and the PSNR must show it"
    for record in records_of(results, "openvino-bf16"):  # reduced precision: visibly not FP32, still close
        assert 45 < record["psnr_vs_fp32"] < 100 and record["details"]["precision"] == "bf16"


def test_fidelity_on_real_photos_against_their_reference(smoke):
    _, results = smoke
    photos = {p["backend"]: p for p in results["photos"]}
    assert set(photos) == {r["backend"] for r in results["records"]} - {"torch"}, "every backend but the baseline"
    for result in photos.values():
        assert result["status"] == "ok", result["reason"]
        assert [p["name"] for p in result["photos"]] == ["crop"] and result["peak_rss_mib"] > 0
    for name in ("onnxruntime", "onnxruntime-uint8", "openvino")[: 3 if OPENVINO else 2]:
        assert photos[name]["min_psnr_db"] is None or photos[name]["min_psnr_db"] > 60, name
    if NATIVE_BF16:
        assert photos["openvino-bf16"]["full_fidelity"]
    assert not photos["onnxruntime@scale0.5"]["full_fidelity"], "half resolution on a real photo is below 50 dB"


def test_backends_that_cannot_run_here_are_reported_with_the_reason(smoke):
    _, results = smoke
    skipped = {s["backend"]: s["reason"] for s in results["skipped"]}
    assert "--engine" in skipped["tensorrt"]
    if not OPENVINO:
        assert "pip install 'cliplit[openvino]'" in skipped["openvino"]
    elif not NATIVE_BF16:
        assert "does not run bf16 natively" in skipped["openvino-bf16"]
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        assert "CUDA" in skipped["torch-fp16"]


def test_end_to_end_video_beside_an_ffmpeg_transcode(smoke):
    _, results = smoke
    assert [(v["model"], v["frames"]) for v in results["video"]] == [("clip-lit-rt", 6), ("clip-lit", 2)]
    for video in results["video"]:
        assert video["status"] == "ok", video["reason"]
        assert (video["size"], video["width"], video["height"]) == ("96x64", 96, 64)
        assert len(video["rounds"]["cliplit"]) == len(video["rounds"]["ffmpeg"]) == 1
        assert video["fps"] == video["rounds"]["cliplit"][0]["fps"] > 0
        assert video["ffmpeg_fps"] == video["rounds"]["ffmpeg"][0]["fps"] > 0
        assert video["ratio"] == pytest.approx(video["fps"] / video["ffmpeg_fps"])
        assert set(video["stage_mean_ms"]) == {"decode", "inference", "encode"}
    assert results["config"]["video_photos"] == str(SHARED.parent / "photos")


def test_markdown_table_and_chart_are_written(smoke):
    out, results = smoke
    table = (out / "results.md").read_text()
    for record in results["records"]:
        assert f"| `{record['backend']}` | 96x64 | {record['median_ms']:,.1f} |" in table
    assert "## Batch throughput (batch 2)" in table and "## End-to-end video" in table
    assert "| ffmpeg transcode fps | ratio |" in table
    for video in results["video"]:
        assert f"| {video['model']} | 96×64 | {video['frames']} | {video['fps']:.1f} |" in table
        assert f"| {video['ffmpeg_fps']:.1f} | **{video['ratio']:.2f}** |" in table
    assert f"`{results['command']}`" in table and results["command"].startswith("cliplit bench ")
    assert "`torch-fp16`" in table  # listed under "Not run"
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_results_are_not_replaced_without_overwrite(smoke, capsys):
    out, _ = smoke
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["bench", "--sizes", "96x64", "--repeats", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "torch,fastest"], "unknown backend(s) fastest"),
        (["--sizes", "1x1"], "too small"),
        (["--batch", "0"], "--batch"),
        (["--scale", "2"], "--scale"),
        (["--backends", "torch", "--scale", "0.5"], "--scale needs one of the runtime backends"),
        (["--video", "--video-photos", ".", "--video-size", "95x64"], "even width and height"),
        (["--video"], "--video needs --video-photos"),
        (["--video", "--video-photos", "."], "no photos to pan over"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(argv, message, tmp_path, capsys):
    code = main(["bench", "--repeats", "1", "--peak-size", "16", "--sizes", "8x8", *argv, "--out", str(tmp_path)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "a refused run writes nothing"


@pytest.mark.parametrize(("interleave", "memory_low"), [(True, False), (True, True), (False, False)])
def test_backends_are_timed_together_unless_memory_is_low_or_interleaving_is_off(interleave, memory_low, monkeypatch):
    from cliplit.benchmarks import suite
    from cliplit.benchmarks.workloads import parse_sizes

    monkeypatch.setattr(suite, "memory_low", lambda: memory_low)
    sizes = parse_sizes("24x16")
    config = suite.SuiteConfig(["torch", "onnxruntime"], sizes, warmup=0, repeats=1, peak_n=16, interleave=interleave)
    results = suite.run_suite(config, log=lambda _message: None)
    together = {r["backend"]: r["details"]["timed_with"] for r in results["records"]}
    if interleave and not memory_low:
        assert together == {"torch": ["onnxruntime"], "onnxruntime": ["torch"]}
    else:
        assert together == {"torch": [], "onnxruntime": []}
    assert all(r["status"] == "ok" for r in results["records"])
    assert results["records"][1]["psnr_vs_fp32"] > 100, "the reference outlives the baseline's group"
