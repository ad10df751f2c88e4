"""How many threads the command line computes with: the cores that are free, unless the user says.

torch starts one OpenMP thread per core. With another busy process on the machine those threads
wait on each other at every barrier while the other process holds a core: encoding kodim23 on this
2-core machine with one competing process took 15.6 s with 2 threads and 4.0 s with 1. So the
command line takes ``--threads``, else ``OMP_NUM_THREADS``, else the cores free right now: the
cores this process may run on, less the cores the rest of the machine kept busy over a short look
at ``/proc/stat`` (the load average lags by a minute and would count a vqcodec run that just ended).
The library itself never changes torch's setting; bits never depend on it (``vqcodec.codec``).
A decode uses that many cores through worker processes (``vqcodec.workers``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

SAMPLE_SECONDS = 0.1  # how long to watch the machine's load before choosing


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cores(sample: Callable[[], tuple[int, int] | None] = _cpu_times, seconds: float = SAMPLE_SECONDS) -> float:
    """How many cores the machine kept busy over the next ``seconds`` (0.0 if it cannot tell)."""
    first = sample()
    if first is None:
        return 0.0
    time.sleep(seconds)
    second = sample()
    if second is None or second[1] <= first[1]:
        return 0.0
    fraction = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, fraction) * (os.cpu_count() or 1)


def free_cores(busy: float | None = None) -> int:
    """Usable cores less the busy ones (a core counts as busy from half its time), at least one."""
    busy = busy_cores() if busy is None else busy
    return max(1, usable_cores() - int(busy + 0.5))


def choose_threads(requested: int | None = None, environ: Mapping[str, str] = os.environ,
                   free: Callable[[], int] = free_cores) -> int:
    """``requested`` (``--threads``), else a valid ``OMP_NUM_THREADS``, else the free cores."""
    if requested is not None:
        return requested
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return free()
