"""malloc tuning and trimming: real glibc calls in a child process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from edge_agent.host import libc, memtune

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


@glibc
def test_tune_and_trim_return_freed_memory_to_the_kernel() -> None:
    # A child process, so that tuning does not change this test process.
    code = (
        "from edge_agent.host import memtune\n"
        "def anon():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('RssAnon'):\n"
        "            return int(line.split()[1])\n"
        "assert memtune.tune()\n"
        "base = anon()\n"
        # Many small blocks (below the mmap threshold) that stay in the heap when freed.
        "blocks = [bytearray(2000) for _ in range(20_000)]\n"
        "high = anon()\n"
        "del blocks\n"
        "assert memtune.trim()\n"
        "print(base, high, anon())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base, high, after = (int(x) for x in out.stdout.split())
    assert high - base > 20_000  # KiB: the blocks were resident
    assert after - base < (high - base) / 4  # and most of it went back


def test_libc_handle_is_shared_and_answers() -> None:
    assert libc.libc() is libc.libc()
    assert libc.has("getpid")
    assert not libc.has("no_such_symbol_in_libc")


@glibc
def test_trim_is_safe_to_call_any_time() -> None:
    for _ in range(3):
        assert memtune.trim() in (True, False)
