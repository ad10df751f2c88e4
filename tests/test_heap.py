"""Tests for ``vqcodec.heap``: large tensors reuse freed memory during a codec call."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from vqcodec import heap

glibc_only = pytest.mark.skipif(not heap.tunes_malloc(), reason="malloc tuning is glibc's")

# Run in a fresh interpreter: a long test session's heap holds other tests' freed memory, which a
# new tensor may reuse (or not) whatever the setting.
MEASURE = """
import gc, json, resource, torch
from vqcodec import heap
torch.set_num_threads(1)
gc.disable()
BIG = 4 * 1024 * 1024  # float32: 16 MB, above glibc's starting mmap threshold, below 32 MiB

def faults(make):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    make()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def again():  # a 16 MB tensor filled right after a 24 MB one was freed (room to spare for glibc's splits)
    torch.ones(BIG * 3 // 2)
    return faults(lambda: torch.ones(BIG))

with heap.reuse_freed_memory():
    inside = again()
after = faults(lambda: torch.ones(BIG))  # the first tensor after the call
print(json.dumps({"inside": inside, "after": after, "pages": BIG * 4 // 4096}))
"""


@glibc_only
def test_a_freed_big_tensor_is_reused_inside_and_the_memory_returned_after() -> None:
    out = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["inside"] < got["pages"] // 10  # the freed pages are reused: (almost) no faults
    assert got["after"] > got["pages"] // 2  # the heap was trimmed on the way out: fresh pages again


def test_the_setting_holds_until_the_last_of_nested_and_concurrent_calls_ends() -> None:
    entered, release = threading.Event(), threading.Event()

    def other_call() -> None:
        with heap.reuse_freed_memory():
            entered.set()
            release.wait(10)

    start = heap._active
    thread = threading.Thread(target=other_call)
    try:
        with heap.reuse_freed_memory():
            with heap.reuse_freed_memory():
                assert heap._active == start + 2
            thread.start()
            assert entered.wait(10)
            assert heap._active == start + 2
        assert heap._active == start + 1  # the other call still runs: still set
    finally:
        release.set()
        thread.join()
    assert heap._active == start


def test_an_error_inside_still_restores() -> None:
    start = heap._active
    with pytest.raises(ValueError), heap.reuse_freed_memory():
        raise ValueError("boom")
    assert heap._active == start
