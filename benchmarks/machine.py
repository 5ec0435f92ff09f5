"""What a benchmark ran on: CPU, cores, memory, GPU, library versions, and how busy the machine was.

Numbers without the machine are not reproducible, and numbers from a machine that other jobs were loading are not
comparable with an idle run; so the load average and the other busy processes are recorded at the start and the
end of every run, next to the hardware and the exact library versions.
"""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import time
from pathlib import Path

from cliplit.core.version import cliplit_version
from cliplit.runtime.backends.openvino import cpu_flags

SIMD_FLAGS = frozenset(
    {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16"}
    | {"amx_tile", "amx_bf16", "amx_int8", "avx_vnni"}
)
LIBRARIES = ("numpy", "torch", "onnx", "onnxruntime", "openvino", "cv2", "tensorrt", "matplotlib", "imageio_ffmpeg")


def machine_info() -> dict[str, object]:
    """The static description of this machine and software stack."""
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": gpu_names(),
        "libraries": library_versions(),
        "onnxruntime_providers": _onnxruntime_providers(),
        "torch_threads": _torch_threads(),
        "cliplit": cliplit_version(),
        "git_commit": _git_commit(),
    }


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), falling back to what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The SIMD extensions that decide which kernels the libraries pick (AVX2, AVX-512, AMX, ...)."""
    return sorted(SIMD_FLAGS & (cpu_flags() or frozenset()))


def gpu_names() -> list[str]:
    """Names of the CUDA devices torch sees (empty without torch, CUDA or a GPU)."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]


def library_versions() -> dict[str, str | None]:
    """``__version__`` of each library that matters for the numbers; None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        key = "opencv" if name == "cv2" else name
        try:
            module = importlib.import_module(name)
        except Exception:
            versions[key] = None
            continue
        versions[key] = str(getattr(module, "__version__", "unknown"))
    try:
        import torch

        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return versions


def load_snapshot() -> dict[str, object]:
    """The 1/5/15-minute load averages and the processes (not this one) using a CPU right now."""
    snapshot: dict[str, object] = {}
    if hasattr(os, "getloadavg"):
        snapshot["load_average"] = [round(value, 2) for value in os.getloadavg()]
    snapshot["other_busy_processes"] = _other_busy_processes()
    return snapshot


class OtherLoad:
    """How many CPU cores other processes kept busy between ``start()`` and ``stop()`` (Linux; else None).

    The whole machine's busy time (``/proc/stat``: user, nice, system, irq, softirq and steal, which is time the
    hypervisor gave to other guests) minus the CPU time of this process and of its finished children (the video
    benchmark's ffmpeg), divided by the wall time. On a shared machine this says, per measurement, how much of the
    hardware the numbers did not have.
    """

    def __init__(self) -> None:
        self._start: tuple[float, float, float] | None = None

    def start(self) -> None:
        busy = _machine_busy_seconds()
        self._start = None if busy is None else (busy, _own_cpu_seconds(), time.perf_counter())

    def stop(self) -> float | None:
        busy = _machine_busy_seconds()
        if self._start is None or busy is None:
            return None
        machine0, own0, wall0 = self._start
        wall = time.perf_counter() - wall0
        if wall <= 0:
            return None
        others = (busy - machine0) - (_own_cpu_seconds() - own0)
        # both counters tick in 1/SC_CLK_TCK s (10 ms): over short windows the difference can leave [0, cores]
        return min(max(0.0, others / wall), float(os.cpu_count() or 1))


def _own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and of its children that have finished."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _machine_busy_seconds() -> float | None:
    """CPU-seconds all cores have spent busy since boot, from the first line of /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _other_busy_processes(min_cpu_percent: float = 20.0, interval_s: float = 0.5) -> list[str]:
    """Other processes using at least ``min_cpu_percent`` of a core over ``interval_s`` (Linux /proc; else empty)."""
    before = _cpu_ticks()
    time.sleep(interval_s)
    after = _cpu_ticks()
    ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = []
    for pid, (name, ticks) in after.items():
        if pid == os.getpid() or pid not in before:
            continue
        percent = 100.0 * (ticks - before[pid][1]) / ticks_per_s / interval_s
        if percent >= min_cpu_percent:
            busy.append(f"{name} (pid {pid}, {percent:.0f}% of a core)")
    return busy


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command name, user+system clock ticks) for every readable process."""
    ticks: dict[int, tuple[str, int]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return ticks
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended between listing and reading
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))  # utime, stime (fields 14 and 15)
    return ticks


def reset_peak_rss() -> float | None:
    """Start a new peak-memory measurement of this process and return its resident memory now, in MiB.

    Linux keeps the peak resident set size (``VmHWM``) per process and resets it to the current size when "5" is
    written to ``/proc/self/clear_refs``; so each backend's peak is measured from its own loading on, not inherited
    from a larger backend before it. None where this is not possible (then no peak is reported: a lifetime peak
    would be credited to the wrong backend).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_mib("VmRSS")


def peak_rss_mib(at_least: float | None = None) -> float | None:
    """This process's peak resident memory since the last :func:`reset_peak_rss`, in MiB (None: unknown); never below
    ``at_least``, the resident memory that reset read: the kernel folds each thread's page counts into ``VmHWM``
    lazily, so right after a reset it can read a fraction of a MiB under ``VmRSS``."""
    peak = _status_mib("VmHWM")
    return peak if peak is None or at_least is None else max(peak, at_least)


def _status_mib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_low(min_fraction: float = 0.2, min_gib: float = 2.0) -> bool:
    """Whether less than ``min_fraction`` of RAM, or less than ``min_gib``, is available (Linux; else False).

    The benchmark keeps every backend of a frame size loaded so it can time them interleaved; ONNX Runtime's memory
    arenas and PyTorch's caches at 1080p and 4K hold gigabytes each, so on a small or shared machine it times what it
    has loaded and frees it before loading more.
    """
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total_kib = int(fields["MemTotal"].split()[0])
        available_kib = int(fields["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return False
    return available_kib < max(min_fraction * total_kib, min_gib * 2**20)


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _onnxruntime_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _git_commit() -> str | None:
    """The checkout's commit, so results can be tied to the code that produced them (None outside git)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None
