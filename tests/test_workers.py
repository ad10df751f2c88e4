"""Tests for ``vqcodec.workers``: pieces of a decode in forked processes of one thread each."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from vqcodec.errors import VQCodecError
from vqcodec.workers import fork_workers, map_forked


def _where(item: int) -> tuple[int, int, int]:
    return item, os.getpid(), torch.get_num_threads()


def test_results_come_in_order_from_other_processes_of_one_thread() -> None:
    results = list(map_forked(_where, list(range(5)), 2))
    assert [item for item, _, _ in results] == list(range(5))
    assert os.getpid() not in {pid for _, pid, _ in results}
    assert {threads for _, _, threads in results} == {1}


def test_one_worker_or_one_item_runs_here() -> None:
    assert {pid for _, pid, _ in map_forked(_where, [1, 2, 3], 1)} == {os.getpid()}
    assert [pid for _, pid, _ in map_forked(_where, [7], 2)] == [os.getpid()]
    assert list(map_forked(_where, [], 2)) == []


def test_the_job_comes_with_the_fork_and_numpy_results_come_back() -> None:
    """The job may be a closure over large tensors (nothing but items and results is pickled)."""
    table = torch.arange(12.0).reshape(3, 4)
    results = list(map_forked(lambda row: (table[row] * 2).numpy(), [0, 1, 2], 2))
    assert all(np.array_equal(r, (table[k] * 2).numpy()) for k, r in enumerate(results))


def test_an_error_in_a_worker_is_raised_here() -> None:
    def job(item: int) -> int:
        if item == 3:
            raise VQCodecError("tile 3 is damaged")
        return item

    with pytest.raises(VQCodecError, match="tile 3 is damaged"):
        list(map_forked(job, [1, 2, 3, 4], 2))


def test_workers_follow_torch_threads_on_the_cpu_only() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert fork_workers("cpu") == (2 if os.name == "posix" and os.uname().sysname == "Linux" else 1)
        assert fork_workers(torch.device("meta")) == 1
    finally:
        torch.set_num_threads(before)


_KILL_IN_FORK_HOOK = []  # set: the next fork's parent-side hook sends this process SIGINT


def _sigint_inside_fork_hook() -> None:
    if _KILL_IN_FORK_HOOK:
        _KILL_IN_FORK_HOOK.clear()
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(1000))  # Python code after the signal: its handler runs here, inside the hook


def test_a_ctrl_c_while_the_pool_forks_is_not_lost() -> None:
    """A KeyboardInterrupt raised in an at-fork hook (logging's, in the parent) is printed as
    "Exception ignored" and lost, and the command ran on to the end; the pool's forks hold a Ctrl-C
    and raise it once they are done, and no worker is left behind."""
    import multiprocessing

    if not hasattr(os, "register_at_fork"):
        pytest.skip("no at-fork hooks here")
    if not getattr(test_a_ctrl_c_while_the_pool_forks_is_not_lost, "hooked", False):
        os.register_at_fork(after_in_parent=_sigint_inside_fork_hook)
        test_a_ctrl_c_while_the_pool_forks_is_not_lost.hooked = True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _KILL_IN_FORK_HOOK.append(True)
    with pytest.raises(KeyboardInterrupt):
        list(map_forked(abs, [-1, -2, -3], 2))
    assert not _KILL_IN_FORK_HOOK and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert list(map_forked(abs, [-1, -2, -3], 2)) == [1, 2, 3]  # the next pool works as ever
    for child in multiprocessing.active_children():
        child.join(5)
    assert not multiprocessing.active_children()
