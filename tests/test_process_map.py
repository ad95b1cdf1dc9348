"""process_map: order, a bounded stream, worker state, Ctrl-C left to the caller, dead workers.

The functions the workers run are module-level here, since spawned workers import them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator

import pytest

from cotforge.process_map import WorkerDied, available_cores, process_map

_STATE: dict[str, int] = {}


def _remember(offset: int) -> None:
    _STATE["offset"] = offset


def _add_offset(chunk: list[int]) -> list[int]:
    return [item + _STATE["offset"] for item in chunk]


def _sigint_handler(chunk: list[int]) -> list[bool]:
    return [signal.getsignal(signal.SIGINT) == signal.SIG_IGN for _ in chunk]


def _die_on_13(chunk: list[int]) -> list[int]:
    if 13 in chunk:
        os._exit(1)  # what the OOM killer leaves: no exception, no result
    return chunk


def _no_state() -> None:
    pass


def test_results_come_in_input_order_with_the_workers_state() -> None:
    results = process_map(
        _add_offset,
        range(50),
        workers=2,
        chunk_size=3,
        initializer=_remember,
        initargs=(1000,),
    )
    assert list(results) == [1000 + n for n in range(50)]


def test_the_input_is_read_lazily_with_a_bounded_window() -> None:
    read: list[int] = []

    def items() -> Iterator[int]:
        for n in range(10_000):
            read.append(n)
            yield n

    results = process_map(
        _add_offset, items(), workers=2, chunk_size=5, initializer=_remember, initargs=(0,)
    )
    assert next(results) == 0
    # two chunks per worker in flight, plus the chunk being cut
    assert len(read) <= 5 * (2 * 2 + 1)
    results.close()
    assert not multiprocessing.active_children()


def test_workers_leave_ctrl_c_to_the_caller() -> None:
    flags = process_map(
        _sigint_handler, range(4), workers=2, chunk_size=2, initializer=_no_state
    )
    assert list(flags) == [True] * 4
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN


def test_a_worker_that_dies_raises_worker_died_and_leaves_no_process() -> None:
    results = process_map(_die_on_13, range(40), workers=2, chunk_size=4, initializer=_no_state)
    with pytest.raises(WorkerDied):
        list(results)
    assert not multiprocessing.active_children()


def test_available_cores_is_at_least_one() -> None:
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
