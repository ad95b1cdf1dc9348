"""One thread that writes results to the store in batches while an event loop produces them.

Generation and evaluation receive answers on an asyncio loop. Each answer must be durable soon
after it arrives (a kill loses at most a moment of work), but a DuckDB commit costs tens of
milliseconds whatever its size, and it must not stall the loop. So the loop queues results and
this thread writes whatever has gathered in one call (one transaction): a burst of answers
costs one commit. While it runs, the store is the writer's alone; the loop reads the store only
after :meth:`BatchWriter.flush` or :meth:`BatchWriter.close`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Calls ``write(items)`` on its own thread with the items :meth:`put` queued meanwhile.

    ``gather_s`` > 0 waits that long after the first item for more to join the batch (fewer,
    larger transactions when answers arrive at hundreds per second); 0 writes what is there.
    A failed write stops further writes and is raised by the next :meth:`put`, :meth:`flush`
    or :meth:`close`, so the producing loop stops instead of losing results silently.
    """

    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        what: str,
        gather_s: float = 0.0,
        name: str = "cotforge-store",
    ) -> None:
        self._write = write
        self._what = what
        self._gather_s = gather_s
        self._queue: queue.Queue[T | None] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        """Queue one item; raises when an earlier write failed (the run must stop)."""
        self._raise()
        self._queue.put(item)

    def flush(self) -> None:
        """Wait until everything queued is written."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            msg = f"{self._what} failed: {self.error}"
            raise RuntimeError(msg) from self.error

    def _gather(self) -> list[T | None]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self._gather_s
        while batch[-1] is not None:
            try:
                if self._gather_s > 0:
                    timeout = max(0.0, deadline - time.monotonic())
                    batch.append(self._queue.get(timeout=timeout))
                else:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        stop = False
        while not stop:
            batch = self._gather()
            items = [item for item in batch if item is not None]
            stop = len(items) < len(batch)
            if items and self.error is None:
                try:
                    self._write(items)
                except BaseException as err:  # raised to the producer by put/flush/close
                    self.error = err
            for _ in batch:
                self._queue.task_done()
