"""Map a function over a stream of items on several processes, in order.

Pure-Python work such as the verification checks is bound by one core under the GIL; worker
processes are the way to use the others. :func:`process_map` differs from
``ProcessPoolExecutor.map`` in what a long run over a store needs:

- it reads its input lazily, with a bounded number of chunks in flight, so a caller can write
  results batch by batch (a crash loses one batch, not the run) and memory stays flat;
- workers are started with ``spawn``: the caller holds threads (DuckDB's, the progress bar's)
  that a ``fork`` would copy in an unknown state, and ``spawn`` behaves the same on every OS;
- workers ignore Ctrl-C, so the interrupt reaches the caller alone, which stops the pool and
  keeps what it wrote;
- a worker that dies (killed, out of memory) raises :class:`WorkerDied` instead of the
  executor's ``BrokenProcessPool``, for the caller to turn into advice.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerDied(RuntimeError):
    """A worker process ended without returning its chunk."""


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells, e.g. in a
    container limited with ``taskset``), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _start_worker(initializer: Callable[..., None], initargs: tuple[object, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*initargs)


def process_map(
    function: Callable[[list[T]], list[R]],
    items: Iterable[T],
    *,
    workers: int,
    chunk_size: int,
    initializer: Callable[..., None],
    initargs: tuple[object, ...] = (),
) -> Iterator[R]:
    """The results of ``function`` over ``items``, in the order of ``items``.

    ``function`` takes a list of up to ``chunk_size`` items and returns one result per item;
    chunks amortise the cost of sending work between processes. ``initializer(*initargs)``
    runs once in each worker, to build the state that ``function`` reads (a module global), so
    it is sent once per worker instead of once per chunk. Both must be importable module-level
    functions. At most two chunks per worker are in flight.
    """
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(initializer, initargs),
    )
    pending: deque[Future[list[R]]] = deque()
    stream = iter(items)
    try:
        while chunk := list(islice(stream, chunk_size)):
            pending.append(pool.submit(function, chunk))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool as err:
        raise WorkerDied(str(err)) from err
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
