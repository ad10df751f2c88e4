"""Tests for ``vqcodec.heap``: large tensors reuse freed memory during a codec call."""

from __future__ import annotations

import gc
import resource
import threading

import pytest
import torch

from vqcodec import heap

glibc_only = pytest.mark.skipif(not heap.tunes_malloc(), reason="malloc tuning is glibc's")
BIG = 4 * 1024 * 1024  # float32 elements: a 16 MB tensor, above glibc's starting mmap threshold
PAGES = BIG * 4 // 4096


@pytest.fixture(autouse=True)
def _quiet_heap():
    """torch on one thread, as the codec's workers compute (a fill on several threads is its own test
    of glibc's arenas), and no garbage collection during the test: memory that earlier tests left to
    the collector, freed in the middle of a measurement, would be reused without faults."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.collect()
    gc.disable()
    yield
    gc.enable()
    torch.set_num_threads(before)


def _faults(make) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    make()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _faults_of_a_new_big_tensor() -> int:
    """Page faults taken by filling a 16 MB tensor right after one of that size was freed."""
    torch.ones(BIG)  # allocated, touched, freed
    return _faults(lambda: torch.ones(BIG))


@glibc_only
def test_a_freed_big_tensor_is_reused_inside_and_the_memory_returned_after() -> None:
    with heap.reuse_freed_memory():
        inside = _faults_of_a_new_big_tensor()
    assert inside < PAGES // 10  # the freed pages are reused: (almost) no faults
    # the heap was trimmed on the way out: the next tensor starts on fresh pages again
    assert _faults(lambda: torch.ones(BIG)) > PAGES // 2


@glibc_only
def test_the_setting_holds_until_the_last_of_nested_and_concurrent_calls_ends() -> None:
    entered, release = threading.Event(), threading.Event()

    def other_call() -> None:
        with heap.reuse_freed_memory():
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=other_call)
    with heap.reuse_freed_memory():
        thread.start()
        entered.wait(10)
    assert heap._active == 1  # the other call still runs: still set
    assert _faults_of_a_new_big_tensor() < PAGES // 10
    release.set()
    thread.join()
    assert heap._active == 0


def test_an_error_inside_still_restores() -> None:
    with pytest.raises(ValueError), heap.reuse_freed_memory():
        raise ValueError("boom")
    assert heap._active == 0
