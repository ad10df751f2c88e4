"""glibc's malloc set up for a codec call: large tensors reuse freed memory instead of fresh pages.

torch allocates CPU tensors with ``malloc``. glibc serves every block above its mmap threshold
(128 KiB, raised on the fly to at most 32 MiB) with a new ``mmap`` and unmaps it on ``free``, and
trims freed memory at the top of its heap back to the system; so the next tensor of that size
starts on fresh pages, and the kernel zero-fills them one 4 KiB page fault at a time. A codec
call makes thousands of such tensors (a decoder layer's activations at Kodak size are 22 MB; a
prior step's windows and probabilities 0.1-1 MB): measured on this 2-core VM, cloning a 22 MB
tensor took 17 ms on fresh pages and 2.5 ms on reused ones, and decoding a Kodak image at quality
8 spent about a tenth of its time in page faults (``benchmarks/README.md``).

``reuse_freed_memory()`` fixes glibc's mmap threshold at its ceiling, 32 MiB (larger blocks still
get their own mapping, returned to the system on ``free``, so memory stays bounded for huge
images), and keeps freed memory in the heap for as long as any codec call in the process runs;
when the last one ends it trims the heap (``malloc_trim``) and leaves the thresholds where glibc's
own adjustment takes them after a 32 MiB block: mmap above 32 MiB, trim above 64 MiB (glibc has no
call that gives back its dynamic adjustment). Forked decoding workers inherit the setting. It
changes where memory comes from, never what is computed. Elsewhere than glibc (macOS, Windows,
musl) it does nothing. (Turning mmap off altogether was no faster and let the heap fragment: a
16 MB tensor made and freed in a loop on two threads grew the heap by its size most times.)
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_ABOVE = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64 bits
KEEP_FREED = 2**31 - 1  # a trim threshold (an int) of 2 GiB: freed memory stays in the heap
TRIM_AFTER = 2 * MMAP_ABOVE  # the trim threshold glibc itself sets after freeing a 32 MiB mapping

_lock = threading.Lock()
_active = 0  # codec calls running in this process that hold the setting


def _load_glibc():
    """The process's C library if it is glibc with ``mallopt`` and ``malloc_trim``, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


_libc = _load_glibc()


def tunes_malloc() -> bool:
    """Whether ``reuse_freed_memory`` changes anything here (glibc only)."""
    return _libc is not None


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Within this block (nested or in several threads at once), blocks up to 32 MiB come from the
    heap and freed memory stays there; when the last block ends, the freed memory goes back to the
    system. Usable as a decorator."""
    global _active
    if _libc is None:
        yield
        return
    with _lock:
        if _active == 0:
            _libc.mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE)
            _libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _libc.mallopt(M_TRIM_THRESHOLD, TRIM_AFTER)
                _libc.malloc_trim(0)
