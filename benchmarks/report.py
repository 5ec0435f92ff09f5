"""Write a run's results three ways: ``results.json`` (everything), ``results.md`` (the table) and ``latency.png``.

The JSON is the source of truth; the Markdown and the chart are rendered from it alone, so ``render_markdown`` and
``plot_latency`` can regenerate them from a committed ``results.json``. Every file is written atomically and none
is replaced unless asked, so an interrupted or refused run never leaves half a result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # imported lazily: `cliplit --help` must not load matplotlib

from cliplit.core.atomic import atomic_output, check_writable

RESULT_FILES = ("results.json", "results.md", "latency.png")

# Frame rates whose per-frame budget the chart marks: PAL video, NTSC/web video, high-frame-rate video.
REAL_TIME_FPS = (25, 30, 60)


def check_outputs(out_dir: str | os.PathLike[str], overwrite: bool) -> None:
    """Refuse before a long run starts, not after it, if results would be replaced without ``overwrite``."""
    for name in RESULT_FILES:
        check_writable(Path(out_dir) / name, overwrite)


def write_results(results: dict[str, Any], out_dir: str | os.PathLike[str], *, overwrite: bool) -> list[Path]:
    """Write the JSON, the Markdown table and the chart into ``out_dir``; return their paths."""
    out = Path(out_dir)
    paths = [out / name for name in RESULT_FILES]
    check_outputs(out, overwrite)
    with atomic_output(paths[0], overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    with atomic_output(paths[1], overwrite=overwrite) as tmp:
        tmp.write_text(render_markdown(results))
    with atomic_output(paths[2], overwrite=overwrite) as tmp:
        plot_latency(results, tmp)
    return paths


def render_markdown(results: dict[str, Any]) -> str:
    """The human-readable report: machine and method, one table per batch size, video, what did not run."""
    lines = ["# cliplit bench results", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    lines += [*_machine_lines(results), ""]
    records = results["records"]
    photos = {p["backend"]: p for p in results.get("photos", [])}
    for batch in sorted({r["batch"] for r in records}):
        title = "Single-frame latency (batch 1)" if batch == 1 else f"Batch throughput (batch {batch})"
        lines += [f"## {title}", "", *_table([r for r in records if r["batch"] == batch], photos), ""]
    lines += ["![median latency per frame by resolution and backend](latency.png)", ""]
    lines += ["## Backends", "", *_backend_lines(records), ""]
    if photos:
        lines += ["## Fidelity on real photos (against the official outputs)", "", *_photo_table(photos), ""]
    if results.get("video"):
        from cliplit.benchmarks.video import video_table

        lines += ["## End-to-end video (decode + enhance + encode)", "", *video_table(results["video"]), ""]
    not_run = [f"- `{s['backend']}`: {s['reason']}" for s in results.get("skipped", [])]
    not_run += [
        f"- `{r['backend']}` at {r['size']} batch {r['batch']}: {r['reason']}" for r in records if r["status"] != "ok"
    ]
    if not_run:
        lines += ["## Not run", "", *not_run, ""]
    if results.get("notes"):
        lines += ["## Notes", "", *(f"- {note}" for note in results["notes"]), ""]
    lines += [*_legend(), ""]
    return "\n".join(lines)


def _backend_lines(records: list[dict[str, Any]]) -> list[str]:
    """What each backend is: a runtime backend as ``cliplit enhance --backend`` opens it, or a bench-only variant
    (a PyTorch configuration no runtime backend runs, measured only to compare with). Results from before records
    said which have no kind."""
    kinds = {True: " (bench-only variant)", False: " (runtime backend)", None: ""}
    described: dict[str, dict[str, Any]] = {}
    for record in records:
        described.setdefault(record["backend"], record)
    return [
        f"- `{name}`{kinds[r.get('bench_only')]}: {r['description'].removeprefix('bench-only: ')}"
        for name, r in described.items()
    ]


def _machine_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    libs = m.get("libraries", {})
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    versions = ", ".join(f"{name} {version}" for name, version in libs.items() if version)
    lines = [
        f"- Machine: {m.get('cpu_model')} ({m.get('usable_cpus')} usable CPUs; "
        f"{' '.join(m.get('cpu_features') or [])}), {m.get('memory_gib')} GiB RAM, {gpus}",
        f"- Software: Python {m.get('python')}, {versions}; ONNX Runtime providers: "
        f"{', '.join(m.get('onnxruntime_providers') or [])}; torch threads: {m.get('torch_threads')}",
        f"- Run: {results.get('started')}, {results.get('duration_s')} s, cliplit {m.get('cliplit')} "
        f"(commit {str(m.get('git_commit'))[:12]})",
    ]
    for when in ("start", "end"):
        load = m.get(f"load_at_{when}") or {}
        busy = load.get("other_busy_processes") or []
        lines.append(
            f"- Load at {when}: {load.get('load_average')} (1/5/15 min); other busy processes: "
            f"{', '.join(busy) if busy else 'none'}"
        )
    flops = results.get("flops_per_pixel")
    if flops:
        lines.append(f"- Network cost: {flops / 1e3:.1f} kFLOP per pixel (convolutions; 1 FMA = 2 FLOPs)")
    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for p in results.get("peak", []):
        key = (p["implementation"], p["device"], p["dtype"])
        if p.get("error") is None and (key not in best or p["gflops"] > best[key]["gflops"]):
            best[key] = p
    if best:
        text = ", ".join(
            f"{impl} {device} {dtype} {p['gflops']:.0f} (n={p['n']})" for (impl, device, dtype), p in best.items()
        )
        lines.append(
            f"- Measured matrix-product peak, best of each GEMM (GFLOP/s): {text}; % of peak is relative to the "
            "best of the same device and precision"
        )
    config = results.get("config", {})
    lines.append(
        f"- Method: check frame (first call, untimed in the stats) + {config.get('warmup')} warm-up call(s), then up "
        f"to {config.get('repeats')} timed repeats"
        + (f" or {config['budget_s']} s per record (at least 2)" if config.get("budget_s") else "")
        + ", each on a fresh random input"
    )
    return lines


_COLUMNS = (
    "backend",
    "size",
    "median ms",
    "p95 ms",
    "min ms",
    "fps",
    "speedup vs torch",
    "PSNR vs FP32",
    "PSNR vs official (min)",
    "GFLOP/frame",
    "GFLOP/s",
    "% of peak",
    "peak RSS MiB",
    "repeats",
    "others' load",
)


def _table(records: list[dict[str, Any]], photos: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| " + " | ".join(_COLUMNS) + " |", "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    order = {name: index for index, name in enumerate(dict.fromkeys(r["backend"] for r in records))}
    for r in sorted(records, key=lambda r: (r["width"] * r["height"], order[r["backend"]])):
        if r["status"] != "ok":
            cells = [f"`{r['backend']}`", _size(r), "error", *([""] * (len(_COLUMNS) - 3))]
        else:
            cells = [
                f"`{r['backend']}`",
                _size(r),
                _num(r["median_ms"]),
                _num(r["p95_ms"]),
                _num(r.get("min_ms")),
                _num(r["fps"], 2),
                "1.00 (baseline)" if r["backend"] == "torch" else _num(r["speedup_vs_torch"], 2, "×"),
                _psnr(r),
                _num((photos.get(r["backend"]) or {}).get("min_psnr_db"), 1, " dB"),
                _num(r["gflops_per_frame"]),
                _num(r["achieved_gflops"]),
                _num(r["percent_of_peak"], 0, " %"),
                _num(r.get("peak_rss_mib"), 0),
                str(r["repeats"]),
                _num(r.get("other_load_cores"), 1, " cores"),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _photo_table(photos: dict[str, dict[str, Any]]) -> list[str]:
    """One row per backend: its PSNR on each photo against the official output, the range, time and peak memory."""
    names = list(dict.fromkeys(p["name"] for result in photos.values() for p in result.get("photos", [])))
    rows = [
        "| backend | min dB | max dB | " + " | ".join(f"`{name}`" for name in names) + " | seconds | peak RSS MiB |",
        "|" + "|".join("---" for _ in range(len(names) + 5)) + "|",
    ]
    for backend, result in photos.items():
        if result["status"] != "ok":
            rows.append(f"| `{backend}` | error: {result['reason']} |" + " |" * (len(names) + 3))
            continue
        scores = {p["name"]: p for p in result["photos"]}
        cells = [_num(scores[name]["psnr_db"], 1) if name in scores else "" for name in names]
        seconds = sum(p["seconds"] for p in result["photos"])
        rows.append(
            f"| `{backend}` | {_num(result['min_psnr_db'], 1)} | {_num(result['max_psnr_db'], 1)} | "
            + " | ".join(cells)
            + f" | {_num(seconds, 1)} | {_num(result.get('peak_rss_mib'), 0)} |"
        )
    sizes = ", ".join(
        dict.fromkeys(f"{p['width']}x{p['height']}" for result in photos.values() for p in result.get("photos", []))
    )
    rows += [
        "",
        f"Each photo at its full size ({sizes}), one call each, the output rounded to 8 bits as the runtime writes "
        "it; PSNR against the official output PNG (50 dB, below half an 8-bit level RMS, is full fidelity). "
        "Peak RSS: the process's peak resident memory from loading the backend to its last photo.",
    ]
    return rows


def _legend() -> list[str]:
    return [
        "Columns: median/p95/min are per batch (min: the best case, least disturbed by other processes); "
        "fps = batch × 1000 / median; speedup = the baseline's median at the same size and batch in this run "
        "divided by this median; PSNR compares the backend's output on a shared check "
        "frame with the PyTorch FP32 output (8-bit backends against the FP32 output rounded to 8 bits; 'identical' "
        "means bit-equal); PSNR vs official = the lowest PSNR on the real photos against their official outputs "
        "(see that table; n/a: not run on photos); GFLOP/s = network FLOPs × batch / median; % of peak = GFLOP/s "
        "over the measured matrix-product peak of the same device and precision (bf16 backends against the bf16 "
        "product); peak RSS = the process's peak resident memory from loading the backend to the end of its timing "
        "(the process itself, with PyTorch and the reference, accounts for part of it); others' load = CPU cores "
        "that other processes kept busy while the repeats were timed (machine busy time from /proc/stat minus this "
        "process's CPU time, including hypervisor steal), a measure of how much of the machine the numbers did "
        "not have."
    ]


def _size(record: dict[str, Any]) -> str:
    wxh = f"{record['width']}x{record['height']}"
    return wxh if record["size"] == wxh else f"{record['size']} ({wxh})"


def _psnr(record: dict[str, Any]) -> str:
    if record["backend"] == "torch":
        return "reference"
    if record["psnr_vs_fp32"] is not None:
        return f"{record['psnr_vs_fp32']:.1f} dB"
    return "identical" if record.get("max_abs_diff_vs_fp32") == 0.0 else "n/a"


def _num(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def plot_latency(results: dict[str, Any], path: str | os.PathLike[str]) -> Figure:
    """Grouped bars of median latency per frame (p95 as error bar) by resolution and backend, log scale; returns the
    (closed) figure, so what it shows can be checked without reading pixels."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or GPU machines
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    batch = min((r["batch"] for r in results["records"]), default=1)
    records = [r for r in results["records"] if r["status"] == "ok" and r["batch"] == batch]
    sizes = sorted({(r["width"] * r["height"], _size(r)) for r in records})
    backends = list(dict.fromkeys(r["backend"] for r in records))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.6 + 1.2 * len(sizes) * max(1, len(backends)) / 3), 4.8))
    width = 0.8 / max(1, len(backends))
    for index, backend in enumerate(backends):
        xs, medians, spreads = [], [], []
        for position, (_, label) in enumerate(sizes):
            match = [r for r in records if r["backend"] == backend and _size(r) == label]
            if match:
                xs.append(position + (index - (len(backends) - 1) / 2) * width)
                medians.append(match[0]["median_ms"] / batch)
                spreads.append((match[0]["p95_ms"] - match[0]["median_ms"]) / batch)
        axes.bar(xs, medians, width, yerr=[[0] * len(spreads), spreads], capsize=2, label=backend)
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())
    values = [r["median_ms"] / batch for r in records] + [r["p95_ms"] / batch for r in records]
    if values:  # bars on a log axis need an explicit floor, or their lengths say nothing
        axes.set_ylim(min(values) / 3, max(values) * 2)
    axes.set_xticks(range(len(sizes)), [label for _, label in sizes])
    axes.set_ylabel(f"median latency per frame, ms (batch {batch}; whisker: p95)")
    low, high = axes.get_ylim()
    for index, fps in enumerate(REAL_TIME_FPS):
        budget = 1000.0 / fps
        if low <= budget <= high:  # labels alternate sides: 25 and 30 fps lie close on a log axis
            axes.axhline(budget, color="grey", linestyle=":", linewidth=1)
            x, align = (-0.45, "left") if index % 2 == 0 else (len(sizes) - 0.55, "right")
            axes.text(x, budget, f"{fps} fps", va="bottom", ha=align, fontsize=8, color="grey")
    machine = results.get("machine", {})
    device = ", ".join(machine.get("gpus") or []) or f"{machine.get('cpu_model')} ({machine.get('usable_cpus')} CPUs)"
    axes.set_title(f"CLIP-LIT latency by resolution and backend: {device}", fontsize=10)
    if backends:
        axes.legend(fontsize=8, ncol=2)
    axes.grid(axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(os.fspath(path), dpi=120, format="png")
    plt.close(figure)
    return figure
