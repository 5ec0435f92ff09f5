"""Where ONNX Runtime's CPU time goes for the exported network, and what its session options change.

``python -m cliplit.benchmarks.ort_profile --size 480p`` prints (1) the time per operator type from ONNX Runtime's
own profiler, after its graph optimisations (which is where the NCHWc layout transformer shows up as
``ReorderInput``/``ReorderOutput`` around the convolutions), and (2) the median latency under several session
settings (optimisation level, thread count, spinning), measured in interleaved rounds so that a change in the
machine's load hits every setting alike. It is the tool behind the analysis in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cliplit.benchmarks.harness import HostClock, Timing, Workload, measure_interleaved
from cliplit.benchmarks.workloads import parse_size
from cliplit.core.contract import random_model_input

#: name -> (graph optimisation level, intra-op threads or None for ONNX Runtime's default, allow spinning)
SETTINGS: dict[str, tuple[ort.GraphOptimizationLevel, int | None, bool]] = {
    "all (default)": (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, None, True),
    "all, no spinning": (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, None, False),
    "all, 1 thread": (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 1, True),
    "extended (no NCHWc)": (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, None, True),
    "basic": (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, None, True),
}


def session(model: Path, level: ort.GraphOptimizationLevel, threads: int | None, spinning: bool, **extra: object):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    for key, value in extra.items():
        setattr(options, key, value)
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def op_breakdown(model: Path, image: np.ndarray) -> dict[str, float]:
    """Milliseconds per operator type (domain-qualified when not ONNX's) of one profiled run after a warm-up."""
    with tempfile.TemporaryDirectory() as scratch:
        profiled = session(
            model,
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            None,
            True,
            enable_profiling=True,
            profile_file_prefix=os.path.join(scratch, "ort"),
        )
        name = profiled.get_inputs()[0].name
        profiled.run(None, {name: image})
        profiled.run(None, {name: image})
        events = json.loads(Path(profiled.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last = runs[-1]["ts"]
    totals: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= last:
            totals[event["args"]["op_name"]] += event["dur"] / 1000.0
    return dict(totals.most_common())


def compare_settings(model: Path, image_shape: tuple[int, int], rounds: int) -> dict[str, Timing | Exception]:
    """Latency per setting, the settings interleaved round by round (one warm-up call each)."""
    rng = np.random.default_rng(0)
    workloads = {}
    for label, setting in SETTINGS.items():
        s = session(model, *setting)
        name = s.get_inputs()[0].name
        workloads[label] = Workload(
            lambda image, s=s, name=name: s.run(None, {name: image}),
            lambda: random_model_input("float", 1, *image_shape, rng),
            HostClock(),
        )
    return measure_interleaved(workloads, warmup=1, repeats=rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--size", default="480p")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weights", default="clip-lit")
    args = parser.parse_args()
    from cliplit.runtime.models import ensure_onnx

    size = parse_size(args.size)
    model = ensure_onnx(args.weights, "float")
    image = random_model_input("float", 1, size.height, size.width, np.random.default_rng(1))
    breakdown = op_breakdown(model, image)
    total = sum(breakdown.values())
    print(f"operator time, one run at {size.wxh} ({total:.0f} ms in kernels):")
    for op, ms in breakdown.items():
        if ms >= 0.005 * total:
            print(f"  {op:<22} {ms:9.1f} ms {100 * ms / total:5.1f} %")
    print(f"session settings, median of {args.rounds} interleaved rounds:")
    for label, timing in compare_settings(model, (size.height, size.width), args.rounds).items():
        if isinstance(timing, Exception):
            print(f"  {label:<22} failed: {timing}")
        else:
            samples = ", ".join(f"{v:.0f}" for v in timing.samples_ms)
            print(f"  {label:<22} {timing.median_ms:9.1f} ms  (all: {samples})")


if __name__ == "__main__":
    main()
