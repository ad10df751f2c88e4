"""Tests for ``vqcodec.threads``: the command line computes with the cores that are free, unless told."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vqcodec import threads


def test_an_explicit_count_wins_then_omp_num_threads_then_the_free_cores() -> None:
    free = lambda: 3  # noqa: E731
    assert threads.choose_threads(2, {"OMP_NUM_THREADS": "4"}, free) == 2
    assert threads.choose_threads(None, {"OMP_NUM_THREADS": "4"}, free) == 4
    for junk in ("", "0", "-2", "two", "1.5"):
        assert threads.choose_threads(None, {"OMP_NUM_THREADS": junk}, free) == 3
    assert threads.choose_threads(None, {}, free) == 3


def test_free_cores_subtract_the_busy_ones(monkeypatch) -> None:
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    assert threads.free_cores(busy=0.0) == 4
    assert threads.free_cores(busy=0.4) == 4  # a core counts from half its time
    assert threads.free_cores(busy=1.0) == 3
    assert threads.free_cores(busy=2.6) == 1
    assert threads.free_cores(busy=9.0) == 1  # never fewer than one


def test_busy_cores_from_two_samples(monkeypatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    samples = iter([(100, 1000), (150, 1100)])  # half of every tick busy: one core of two
    assert threads.busy_cores(lambda: next(samples), seconds=0) == pytest.approx(1.0)
    assert threads.busy_cores(lambda: None, seconds=0) == 0.0
    stuck = iter([(100, 1000), (100, 1000)])  # no ticks passed: cannot tell
    assert threads.busy_cores(lambda: next(stuck), seconds=0) == 0.0


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux only")
def test_a_busy_process_is_seen() -> None:
    """A spinning child process keeps about one core busy, and the measurement sees it."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = threads.busy_cores(seconds=0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy >= 0.7, busy
