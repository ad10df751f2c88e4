"""Independent pieces of one decode run side by side in forked worker processes, one thread each.

A decode has three kinds of independent pieces: batches of tiles for the priors
(``coding.tile_codec``), the bands of the VQ-VAE decoder (``vqvae.windows``) and the bands of the
upscaler (``vqvae.upscaler``). They run in processes, not threads:

* a prior step is hundreds of tiny operations, and threads of one process only wait on each other
  at every one of them (measured 1.6x slower than processes);
* a process that forks after its threads ran MKL is not safe: a tile worker forked after the
  VQ-VAE's bands had run in threads hung in MKL's allocator (``mm_account_ptr_by_tid``). Forking
  only from a process whose work ran on its main thread keeps that out.

Each worker computes on one CPU thread, as the sequential path does under ``one_thread()``, so what
it computes does not depend on how many workers there are. The job reaches the workers with the
fork (only the items and the results are pickled: keep them small and numpy, as torch tensors
sent through a pool's pipes hung), one job per pool, so decodes running at once in several threads
never see each other's.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_job: Callable | None = None  # the job of this worker process's pool


def _start_worker(job: Callable) -> None:
    """A worker's initializer: its pool's job, one thread, and Ctrl-C ignored: the parent, which gets
    it too, stops the pool and reports the interrupt once (a worker would print its own traceback)."""
    global _job
    _job = job
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(item):
    return _job(item)


def fork_workers(device: torch.device | str = "cpu") -> int:
    """Worker processes a decode on ``device`` may use: as many as torch has threads (the caller's
    budget of cores, ``vqcodec.threads``); one off Linux (fork is missing, or unsafe with the
    system's libraries), on a GPU (which runs the pieces faster in one process), or in a daemonic
    process (which may not have children)."""
    if (torch.device(device).type != "cpu" or not sys.platform.startswith("linux")
            or multiprocessing.current_process().daemon):
        return 1
    return torch.get_num_threads()


def map_forked(job: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[R]:
    """``job(item)`` for every item, in order, as each is ready: up to ``workers`` items at once in
    forked processes of one thread each, or one after another in this process when there is one
    worker or one item (then the caller decides its threads: run it under ``one_thread()`` for
    results that do not depend on them). An exception in a worker is raised here."""
    if workers <= 1 or len(items) <= 1:
        yield from (job(item) for item in items)
        return
    pool = None
    try:
        with warnings.catch_warnings(), ctrl_c_after_forks():
            # Python >= 3.12 warns of fork with threads; torch's idle ones are safe
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(items)), _start_worker, (job,))
    except BaseException:  # a Ctrl-C held during the forks: the workers go too
        if pool is not None:
            pool.terminate()
        raise
    with pool:
        yield from pool.imap(_run, items, chunksize=1)


@contextmanager
def ctrl_c_after_forks() -> Iterator[None]:
    """Hold a Ctrl-C that arrives while the pool forks until the forks are done, then act on it.

    After a fork Python runs its at-fork hooks in the parent (``logging`` releases its lock there),
    and a KeyboardInterrupt raised inside one is printed as "Exception ignored" and lost: the
    command ran on to the end and exited 0 (seen in the Ctrl-C tests). Within this block SIGINT only
    sets a flag; on leaving it, the previous handler gets the signal (the default one raises
    KeyboardInterrupt here, in ordinary code). Only the main thread may set handlers; elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held and callable(previous):
            previous(signal.SIGINT, held[0])
        elif held and previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)  # what the default does: end the process
