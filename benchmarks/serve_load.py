"""Load on `cliplit serve`: throughput, latency and the server's peak memory at 1, 4, 8 and 16 concurrent clients,
against the Enhancer in-process.

    python -m cliplit.benchmarks.serve_load --model clip-lit.onnx [--size 1280x720] [--frames 48]
        [--clients 1,4,8,16] [--max-memory 2G] [--max-side 1280]

First the Enhancer runs the frames one by one in this process (the baseline: no serialization, no network). Then a
`cliplit serve` subprocess on 127.0.0.1 serves the same model, and for each client count that many threads, each
with its own triton:// client, send their share of the frames one request at a time (closed loop) over HTTP. Per
request latency is from send to answer; throughput is frames over the wall time of the phase. Every phase also
records the CPU that other processes used meanwhile (machine busy time minus this process and the server's), since
the numbers are only comparable on a quiet machine, and the peak resident memory of the server's whole process tree
(`cliplit serve`, tritonserver, its instances; sampled every 50 ms, resident sets summed, so shared pages count once
per process and it errs high). The server is stopped with SIGTERM and must exit 0. Frames are uniform noise (speed
does not depend on content).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cliplit.benchmarks.machine import cpu_model, load_snapshot
from cliplit.benchmarks.workloads import parse_size
from cliplit.core.cli_settings import SettingsCli, from_args, setting
from cliplit.core.command import run_command
from cliplit.core.errors import CliplitError
from cliplit.runtime.backends.onnxruntime import OnnxRuntimeOptions
from cliplit.runtime.backends.triton import TritonOptions
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.memory import process_tree_memory


@dataclass(frozen=True)
class ServeLoadSettings:
    """What the load test serves and how hard it pushes (the server's options: None keeps the server's default)."""

    model: str = setting("", "the .onnx model to serve and to run in-process", required=True)
    size: str = setting("256x144", "frame size: WIDTHxHEIGHT (as the other benchmarks) or 480p, 720p, 1080p, ...")
    frames: int = setting(24, "frames per phase")
    clients: str = setting("1,4,8,16", "client counts")
    threads: int = setting(2, "ONNX Runtime threads, here and per instance")
    instances: int = setting(1, "server model instances")
    max_batch: int | None = setting(None, "server max batch (default: the server's)")
    max_memory: str | None = setting(None, "the server's --max-memory (default: the server's)")
    max_side: int | None = setting(None, "the server's --max-side (default: the server's)")
    json: Path | None = setting(None, "also write the results here")  # noqa: RUF009 (setting makes a field)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    SettingsCli(ServeLoadSettings).add_to(parser)
    settings = from_args(ServeLoadSettings, parser.parse_args(argv))
    return run_command(lambda: _run(settings), "python -m cliplit.benchmarks.serve_load", "bench")


def _run(settings: ServeLoadSettings) -> int:
    size = parse_size(settings.size)
    height, width = size.height, size.width
    frames = list(np.random.default_rng(0).integers(0, 256, (settings.frames, height, width, 3), dtype=np.uint8))
    results = {"machine": cpu_model(), "cores": os.cpu_count(), "load_before": load_snapshot(), "phases": []}
    with Enhancer.open(settings.model, OnnxRuntimeOptions(threads=settings.threads)) as enhancer:
        enhancer.enhance(frames[0])  # warm-up
        results["phases"].append(
            _phase("in-process Enhancer", 1, lambda index: enhancer.enhance(frames[index]), frames, None)
        )
    server, url, metrics = _start_server(settings)
    try:
        for clients in (int(text) for text in settings.clients.split(",")):
            results["phases"].append(_served(url, metrics, clients, frames, server.pid))
            print(json.dumps(results["phases"][-1]), file=sys.stderr, flush=True)  # a long run shows its progress
    finally:
        server.send_signal(signal.SIGTERM)
        if server.wait(timeout=600) != 0:
            raise CliplitError(f"cliplit serve exited with {server.returncode} on SIGTERM")
    results["load_after"] = load_snapshot()
    print(_table(results, settings))
    if settings.json is not None:
        settings.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _served(url: str, metrics: str, clients: int, frames: list[np.ndarray], server_pid: int) -> dict[str, object]:
    remotes = [Enhancer.open(url, TritonOptions(timeout=600, in_flight=1)) for _ in range(clients)]
    try:
        for remote in remotes:
            remote.enhance(frames[0])  # warm-up: connections open
        latencies: list[float] = []
        lock = threading.Lock()

        def client(index: int) -> None:
            for frame in frames[index::clients]:
                started = time.perf_counter()
                remotes[index].enhance(frame)
                with lock:
                    latencies.append(time.perf_counter() - started)

        def run_all(_: int) -> None:
            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        frames0, batches0 = _batch_counters(metrics)
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], process_tree_memory(server_pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        phase = _phase(f"cliplit serve, {clients} client(s)", clients, run_all, [None], server_pid)
        done.set()
        sampler.join()
        phase["server_peak_bytes"] = peak[0]
        frames1, batches1 = _batch_counters(metrics)
        phase["mean_batch"] = (frames1 - frames0) / max(1, batches1 - batches0)
        phase["latency_ms"] = _percentiles(latencies)
        phase["frames"] = len(latencies)
        phase["fps"] = len(latencies) / phase["wall_s"]
        return phase
    finally:
        for remote in remotes:
            remote.close()


def _phase(name: str, clients: int, run, items: list, server_pid: int | None) -> dict[str, object]:
    """Run ``run(i)`` for each item (timing each), with the CPU other processes used meanwhile."""
    busy0, own0, server0 = _machine_busy(), _own_cpu(), _tree_cpu(server_pid)
    latencies = []
    wall0 = time.perf_counter()
    for index in range(len(items)):
        started = time.perf_counter()
        run(index)
        latencies.append(time.perf_counter() - started)
    wall = time.perf_counter() - wall0
    others = (_machine_busy() - busy0) - (_own_cpu() - own0) - (_tree_cpu(server_pid) - server0)
    return {
        "phase": name,
        "clients": clients,
        "frames": len(items),
        "wall_s": wall,
        "fps": len(items) / wall,
        "latency_ms": _percentiles(latencies),
        "other_load_cores": max(0.0, others / wall),
    }


def _batch_counters(metrics: str) -> tuple[int, int]:
    """Triton's counts of frames inferred and of model executions (batches) so far."""
    with urllib.request.urlopen(metrics, timeout=10) as response:
        text = response.read().decode()
    counts = {}
    for name in ("nv_inference_count", "nv_inference_exec_count"):
        found = re.search(rf'^{name}\{{model="clip_lit",version="1"\}} (\d+)', text, re.MULTILINE)
        counts[name] = int(found.group(1)) if found else 0
    return counts["nv_inference_count"], counts["nv_inference_exec_count"]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    values = np.array(seconds) * 1000.0
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def _start_server(settings: ServeLoadSettings) -> tuple[subprocess.Popen, str, str]:
    ports = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    command = [
        sys.executable,
        "-m",
        "cliplit.runtime.cli",
        "serve",
        "--model",
        settings.model,
        "--address",
        "127.0.0.1",
    ]
    command += ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    command += ["--threads", str(settings.threads), "--instances", str(settings.instances)]
    for option, value in (
        ("--max-batch", settings.max_batch),
        ("--max-memory", settings.max_memory),
        ("--max-side", settings.max_side),
    ):
        command += [option, str(value)] if value is not None else []
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/models/clip_lit/ready", timeout=5):
                return server, f"triton://127.0.0.1:{ports[0]}/clip_lit", f"http://127.0.0.1:{ports[2]}/metrics"
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise CliplitError("cliplit serve did not become ready within 300 s")


def _machine_busy() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid`` and its descendants (the server and its tritonserver and stub processes)."""
    if pid is None:
        return 0.0
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, 0.0)
        todo += children.get(current, [])
    return total


def _table(results: dict, settings: ServeLoadSettings) -> str:
    lines = [
        f"{results['machine']} ({results['cores']} cores); frames {settings.size}, "
        f"ONNX Runtime {settings.threads} threads, "
        f"server: {settings.instances} instance(s), max batch {settings.max_batch or 'default'}, max memory "
        f"{settings.max_memory or 'default'}, max side {settings.max_side or 'default'}; load average before "
        f"{results['load_before'].get('load_average')}, after {results['load_after'].get('load_average')}",
        "",
        "| how | clients | frames | frames/s | p50 ms | p95 ms | mean batch | server peak MiB | other load (cores) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in results["phases"]:
        latency = phase["latency_ms"]
        peak = phase.get("server_peak_bytes")
        lines.append(
            f"| {phase['phase']} | {phase['clients']} | {phase['frames']} | {phase['fps']:.2f} | "
            f"{latency['p50']:.0f} | {latency['p95']:.0f} | {phase.get('mean_batch', 1):.1f} | "
            f"{'–' if peak is None else f'{peak / (1 << 20):.0f}'} | {phase['other_load_cores']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
