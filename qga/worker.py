"""The thread that runs blocking command handlers, one at a time.

Results are handed back to the event loop.  A handler stuck in the kernel
(a hung NFS server, a freeze hook that never returns) cannot be killed from
Python; :meth:`Worker.abandon` leaves that thread to finish or hang on its
own and starts a fresh one for the next request.
"""
from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple

if TYPE_CHECKING:
    import queue

Job = Tuple[Callable[[], Any], Callable[[Any], None]]


class Worker:
    """A replaceable single worker thread."""

    def __init__(self, post: Callable[[Callable[[], None]], None]) -> None:
        self._post = post
        self._queue: "Optional[queue.SimpleQueue[Optional[Job]]]" = None
        self.abandoned = 0

    def _ensure_thread(self) -> "queue.SimpleQueue[Optional[Job]]":
        if self._queue is None:
            import queue  # the worker starts with the first non-inline command

            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, args=(self._queue,), name="qga-worker",
                             daemon=True).start()
        return self._queue

    def _run(self, jobs: "queue.SimpleQueue[Optional[Job]]") -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            func, done = job
            # Bind this job's callback and result now: a closure over the loop
            # variables would see the next job's if the loop runs it late.
            self._post(functools.partial(done, func()))
            # Not kept while waiting for the next job: the arguments may hold
            # a guest-file-write's 64 MiB of base64.
            del job, func, done

    def submit(self, func: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``func()`` in the worker; ``done(result)`` is then called on the loop."""
        self._ensure_thread().put((func, done))

    def abandon(self) -> None:
        """Give up on the current job: later jobs go to a new thread."""
        if self._queue is not None:
            self._queue.put(None)  # the old thread exits if it ever finishes its job
            self._queue = None
            self.abandoned += 1

    def stop(self) -> None:
        """Let the thread exit after its current job."""
        self.abandon()
        self.abandoned -= 1
