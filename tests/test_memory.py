"""Memory helpers of the runtime: freed large blocks leave the process once tiling asks for it."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# Frees three 8 MiB blocks in a fresh process and prints how many KiB its resident set kept. glibc's default raises
# its mmap threshold at the first free, so the next blocks come from its heap and stay resident after free (most of a
# block: the heap's top may be trimmed a little, and the interpreter's own allocations move the count by pages).
_FREE_BLOCKS = (
    "import sys\n"
    "import numpy as np\n"
    "from cliplit.runtime.memory import resident_memory, return_large_frees_to_the_system\n"
    "if sys.argv[1] == 'fixed':\n"
    "    assert return_large_frees_to_the_system()\n"
    "before = resident_memory()\n"
    "for _ in range(3):\n"
    "    block = np.ones(8 << 20, np.uint8)\n"
    "    del block\n"
    "print((resident_memory() - before) >> 10)\n"
)


def _kept_kib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FREE_BLOCKS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_large_frees_leave_the_process_once_asked():
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting applies to glibc on Linux only")
    assert _kept_kib("dynamic") >= 4 << 10, "glibc no longer keeps freed large blocks: the test shows nothing"
    assert _kept_kib("fixed") < 1 << 10
