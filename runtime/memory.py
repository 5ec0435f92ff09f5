"""How much memory the process holds, how much the machine has left, and memory sizes as users write them.

Torch-free and dependency-free (the /proc and cgroup files on Linux, ``resource`` elsewhere), for the memory budget
of :mod:`cliplit.runtime.tiling` and ``cliplit enhance --max-memory``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import sys
from pathlib import Path

from cliplit.core.errors import CliplitError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgtKMGT]?)(?:i?[bB])?")


def parse_memory_size(text: str) -> int:
    """``2G``, ``512M``, ``1.5G``, ``800000K`` or a number of bytes → bytes (binary units, 1K = 1024; ``GB`` and
    ``GiB`` mean the same)."""
    match = _SIZE.fullmatch(text.strip())
    size = float(match[1]) * _UNITS[match[2].upper()] if match else 0.0
    if not size >= 1:
        raise CliplitError(f"--max-memory {text!r}: not a memory size; write e.g. 2G, 512M or 1.5G")
    return int(size)


def format_size(size: float) -> str:
    """Bytes for messages: 1.5 GiB, 640 MiB."""
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else f"{size / (1 << 20):.0f} MiB"


def available_memory() -> int | None:
    """Memory this process could still get: the kernel's MemAvailable, lowered to a cgroup's remaining limit (a
    container's ``memory.max`` is invisible in /proc/meminfo); ``None`` where neither can be read (not Linux)."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            limit = int(Path(limit_file).read_text().strip())
            room = limit - int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):  # no such cgroup file, or "max" (no limit)
            continue
        available = room if available is None else min(available, room)
    return available


def resident_memory() -> int:
    """This process's resident set now (Linux /proc/self/statm); elsewhere its peak so far, or 0 where unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, the other Unixes KiB


def process_tree_memory(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants, summed (Linux /proc; 0 for a process that has
    exited). Shared pages count once per process, so this errs high: what a server's budget (its tritonserver and
    stubs included) is checked against."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue  # a process that just exited
    return total


def default_budget() -> int:
    """What this process may use when no ``--max-memory`` is given: what it holds now plus half of what is still
    available (the other half is left to the rest of the machine); 4 GiB more where nothing can be read."""
    available = available_memory()
    return resident_memory() + (available // 2 if available is not None else 4 << 30)


#: glibc's mallopt parameter for the size above which malloc maps memory of its own (and unmaps it on free).
_M_MMAP_THRESHOLD = -3
#: Allocations from this size up are mapped on their own: a tile's tensors and frames are megabytes, small objects are
#: unaffected.
RETURNED_ALLOCATION_SIZE = 1 << 20


def return_large_frees_to_the_system() -> bool:
    """Make glibc give every freed block of ``RETURNED_ALLOCATION_SIZE`` or more back to the system at once.

    Why: glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB), so from then on such
    blocks come from its heaps, which keep them after free. With the tiled path's arena given back after each head
    call, that made the peak of one 0.6 MP frame under a 400 MiB budget vary from 361 to 432 MiB between identical
    runs; with a fixed threshold it was 305 MiB every time, at no measurable cost in time (whole frames per call
    would pay page faults, so this is only for runs that tile). Returns whether it applied (glibc on Linux only;
    other allocators keep their own behaviour)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, RETURNED_ALLOCATION_SIZE))
