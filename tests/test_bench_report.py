"""Rendering and writing results: the Markdown table, the chart, JSON validity and refusal to overwrite."""

from __future__ import annotations

import json

import pytest

from cliplit.benchmarks.report import check_outputs, plot_latency, render_markdown, write_results
from cliplit.core.atomic import OutputExistsError


def record(backend: str, size: str, width: int, height: int, median: float | None, **extra: object) -> dict:
    base = {
        "backend": backend,
        "description": f"{backend} for tests",
        "size": size,
        "width": width,
        "height": height,
        "batch": 1,
        "network_width": width,
        "network_height": height,
        "status": "ok" if median is not None else "error",
        "reason": None if median is not None else "RuntimeError: out of memory",
        "median_ms": median,
        "p95_ms": None if median is None else median * 1.1,
        "min_ms": None if median is None else median - 100,
        "fps": None if median is None else 1000.0 / median,
        "speedup_vs_torch": None,
        "psnr_vs_fp32": None,
        "max_abs_diff_vs_fp32": None,
        "gflops_per_frame": 0.5,
        "achieved_gflops": None if median is None else 500.0 / median,
        "percent_of_peak": None,
        "repeats": 3,
    }
    base.update(extra)
    return base


@pytest.fixture
def results() -> dict:
    return {
        "schema": "cliplit-bench/1",
        "command": "cliplit bench --sizes 480p",
        "started": "2026-01-01T00:00:00+0000",
        "duration_s": 12.0,
        "config": {"warmup": 1, "repeats": 3, "budget_s": 30.0},
        "machine": {
            "cpu_model": "Test CPU",
            "usable_cpus": 2,
            "cpu_features": ["avx2"],
            "memory_gib": 8.0,
            "gpus": [],
            "libraries": {"numpy": "2.0", "tensorrt": None},
            "load_at_start": {
                "load_average": [1.0, 1.0, 1.0],
                "other_busy_processes": ["pytest (pid 1, 99% of a core)"],
            },
            "load_at_end": {"load_average": [0.5, 0.5, 0.5], "other_busy_processes": []},
        },
        "peak": [
            {"implementation": "numpy", "device": "cpu", "dtype": "float32", "n": 64, "gflops": 100.0, "error": None},
            {"implementation": "torch", "device": "cuda", "dtype": "float16", "n": 64, "gflops": None, "error": "x"},
        ],
        "flops_per_pixel": 555264,
        "records": [
            record("torch", "480p", 854, 480, 4000.0, speedup_vs_torch=1.0, max_abs_diff_vs_fp32=0.0, bench_only=False),
            record(
                "onnxruntime",
                "480p",
                854,
                480,
                1600.0,
                speedup_vs_torch=2.5,
                psnr_vs_fp32=131.25,
                other_load_cores=1.25,
                peak_rss_mib=3712.4,
            ),
            record("onnxruntime-uint8", "480p", 854, 480, 1700.0, speedup_vs_torch=2.35, max_abs_diff_vs_fp32=0.0),
            record("torch-compile", "480p", 854, 480, None, bench_only=True),
            record("torch-channels-last", "480p", 854, 480, 2800.0, speedup_vs_torch=1.43, bench_only=True),
            record("torch", "64x32", 64, 32, 30.0, speedup_vs_torch=1.0, max_abs_diff_vs_fp32=0.0),
        ],
        "skipped": [{"backend": "torch-fp16", "reason": "needs CUDA (no GPU visible to torch)"}],
        "video": [
            {
                "model": "clip-lit-rt",
                "size": "64x32",
                "width": 64,
                "height": 32,
                "frames": 30,
                "fps": 20.0,
                "ffmpeg_fps": 80.0,
                "ratio": 0.25,
                "status": "ok",
                "reason": None,
                "stage_mean_ms": {"decode": 1.0, "inference": 45.5, "encode": 2.25},
                "other_load_cores": 0.5,
            },
            {
                "model": "clip-lit",
                "size": "64x32",
                "width": 64,
                "height": 32,
                "status": "error",
                "reason": "CliplitError: no weights",
            },
        ],
        "photos": [
            {
                "backend": "onnxruntime",
                "status": "ok",
                "photos": [
                    {"name": "a", "width": 564, "height": 845, "psnr_db": 94.5, "seconds": 1.5},
                    {"name": "b", "width": 2048, "height": 1536, "psnr_db": 77.54, "seconds": 9.0},
                ],
                "min_psnr_db": 77.54,
                "max_psnr_db": 94.5,
                "peak_rss_mib": 3650.0,
            },
            {"backend": "tensorrt", "status": "error", "reason": "CliplitError: no GPU", "photos": []},
        ],
        "notes": ["other engineers' tests were running"],
    }


def test_markdown_has_the_table_the_failures_and_the_machine(results):
    text = render_markdown(results)
    assert "`cliplit bench --sizes 480p`" in text
    assert "Test CPU" in text and "pytest (pid 1, 99% of a core)" in text
    assert "| `onnxruntime` | 480p (854x480) | 1,600.0 | 1,760.0 | 1,500.0 | 0.62 |" in text
    assert "2.50×" in text and "131.2 dB" in text  # speedup and PSNR as recorded
    assert "| 1.2 cores |" in text  # the load other processes put on the machine meanwhile
    assert "onnxruntime cpu float32" not in text and "numpy cpu float32 100 (n=64)" in text
    assert "| `torch` | 480p (854x480) | 4,000.0 |" in text and "reference" in text
    assert "| `onnxruntime-uint8` |" in text and "identical" in text
    assert "`torch-fp16`: needs CUDA" in text
    assert "`torch-compile` at 480p batch 1: RuntimeError: out of memory" in text
    assert "| `torch-channels-last` | 480p (854x480) | 2,800.0 |" in text
    assert "- `torch-channels-last` (bench-only variant): torch-channels-last for tests" in text
    assert "- `torch-compile` (bench-only variant): torch-compile for tests" in text
    assert "- `torch` (runtime backend): torch for tests" in text
    assert "- `onnxruntime`: onnxruntime for tests" in text, "a record from before the kind was recorded"
    assert "| ffmpeg transcode fps | ratio |" in text  # the video table
    assert "| clip-lit-rt | 64×32 | 30 | 20.0 | 80.0 | **0.25** | 1.0 / 45.5 / 2.2 | 0.5 cores |" in text
    assert "| clip-lit | 64×32 | | error: CliplitError: no weights |" in text
    assert "![median latency" in text and "other engineers' tests were running" in text
    # smaller frames first
    assert text.index("| `torch` | 64x32") < text.index("| `torch` | 480p")


def test_markdown_puts_real_photo_fidelity_and_memory_beside_the_speed(results):
    text = render_markdown(results)
    # the main table: lowest PSNR against the official outputs, peak RSS; n/a where not measured
    assert "| 131.2 dB | 77.5 dB | 0.5 | 0.3 | n/a | 3,712 | 3 | 1.2 cores |" in text
    assert (
        "| `torch` | 480p (854x480) | 4,000.0 | 4,400.0 | 3,900.0 | 0.25 | 1.00 (baseline) | reference | n/a |" in text
    )
    section = text[text.index("## Fidelity on real photos") :]
    assert "| backend | min dB | max dB | `a` | `b` | seconds | peak RSS MiB |" in section
    assert "| `onnxruntime` | 77.5 | 94.5 | 94.5 | 77.5 | 10.5 | 3,650 |" in section
    assert "| `tensorrt` | error: CliplitError: no GPU |" in section
    assert "(564x845, 2048x1536)" in section


def test_write_results_writes_valid_json_markdown_and_png_and_refuses_to_overwrite(results, tmp_path):
    paths = write_results(results, tmp_path / "out", overwrite=False)
    assert [p.name for p in paths] == ["results.json", "results.md", "latency.png"]
    assert json.loads(paths[0].read_text()) == results
    assert paths[1].read_text() == render_markdown(results)
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = paths[0].read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_outputs(tmp_path / "out", overwrite=False)
    with pytest.raises(OutputExistsError):
        write_results({**results, "duration_s": 99.0}, tmp_path / "out", overwrite=False)
    assert paths[0].read_text() == before, "a refused write must leave the old results alone"
    write_results({**results, "duration_s": 99.0}, tmp_path / "out", overwrite=True)
    assert json.loads(paths[0].read_text())["duration_s"] == 99.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths), "no temp files"


def test_results_with_nan_are_refused_not_written_as_invalid_json(results, tmp_path):
    results["records"][0]["median_ms"] = float("nan")
    with pytest.raises(ValueError):
        write_results(results, tmp_path, overwrite=False)
    assert not (tmp_path / "results.json").exists()


def test_chart_is_drawn_from_the_json_alone(results, tmp_path):
    figure = plot_latency(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = figure.axes[0]
    ok = [r for r in results["records"] if r["status"] == "ok" and r["batch"] == 1]
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == list(dict.fromkeys(r["backend"] for r in ok)), "one bar series per backend, in record order"
    heights = sorted(round(bar.get_height(), 6) for bar in axes.patches)
    assert heights == sorted(round(r["median_ms"], 6) for r in ok), "each bar is a record's median per frame"
    assert axes.get_yscale() == "log" and "batch 1" in axes.get_ylabel()
    labels = [tick.get_text() for tick in axes.get_xticklabels()]
    assert len(labels) == len({(r["width"], r["height"]) for r in ok}) and all(labels)
