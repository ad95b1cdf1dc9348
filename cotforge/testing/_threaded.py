"""Running an aiohttp test server in a daemon thread with its own event loop.

The scripted teacher and the Hub stand-in are both used from synchronous tests, which need the
server listening before they go on and stopped (hanging handlers cut off) when they are done.
"""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar, Self


class ThreadedServer:
    """Base of a server that subclasses start with :meth:`start_async` and stop with
    :meth:`stop_async`; this class runs them in a thread and is a context manager."""

    thread_name: ClassVar[str] = "test-server"
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def start_async(self) -> None:
        """Start listening (in the server's loop)."""
        raise NotImplementedError

    async def stop_async(self) -> None:
        """Stop listening and release the server's resources (in the server's loop)."""
        raise NotImplementedError

    def start(self) -> Self:
        """Serve from a daemon thread with its own event loop; returns once it listens."""
        if self._thread is not None:
            msg = "the server is already running"
            raise RuntimeError(msg)
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as err:  # reported to start()'s caller below
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.thread_name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving (hanging requests are cut off) and join the thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
