"""``statvfs`` with a time limit, for filesystems that may hang.

qemu-ga calls statvfs() inline, so one dead network or FUSE-backed block
filesystem wedges the whole agent.  Here the calls of one request run as a
batch on a helper thread (one thread handoff per request, ~20 us) and the
caller waits while the helper makes progress.  When one statvfs makes no
progress for ``timeout`` seconds its mountpoint is remembered as hung and not
retried (its byte counts are omitted) until that stuck call returns on its
own; the stuck helper is abandoned and a fresh one takes the remaining
mountpoints, so a hang costs one thread, not the agent.
"""
from __future__ import annotations

import _thread
import os
import threading
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, Union
from qga.log import get_logger

if TYPE_CHECKING:
    import queue

log = get_logger(__name__)

DEFAULT_TIMEOUT = 2.0
Result = Union[os.statvfs_result, OSError, None]


class _Batch:
    __slots__ = ("paths", "results", "progress", "abandoned", "done")

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.results: List[Result] = [None] * len(self.paths)
        self.progress = 0  # number of paths finished, written by the helper only
        self.abandoned = False
        self.done = _thread.allocate_lock()
        self.done.acquire()


class BoundedStatvfs:
    """statvfs for many paths, never blocking on one path longer than ``timeout``."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT,
                 func: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
        self.timeout = timeout
        self._func = func
        self._lock = threading.Lock()
        self._queue: Optional["queue.SimpleQueue[Optional[_Batch]]"] = None
        #: mountpoint -> (batch, index) of the statvfs call still stuck
        self.hung: Dict[str, Tuple[_Batch, int]] = {}

    def _worker(self, jobs: "queue.SimpleQueue[Optional[_Batch]]") -> None:
        while True:
            batch = jobs.get()
            if batch is None:
                return
            for i, path in enumerate(batch.paths):
                if batch.abandoned:
                    break
                try:
                    batch.results[i] = self._func(path)
                except OSError as exc:
                    batch.results[i] = exc
                batch.progress = i + 1
            batch.done.release()

    def _submit(self, batch: _Batch) -> None:
        if self._queue is None:
            import queue

            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._worker, args=(self._queue,),
                             name="qga-statvfs", daemon=True).start()
        self._queue.put(batch)

    def _abandon(self) -> None:
        if self._queue is not None:
            self._queue.put(None)  # the stuck helper exits once its call returns
            self._queue = None

    def _still_hung(self, path: str) -> bool:
        entry = self.hung.get(path)
        if entry is None:
            return False
        batch, index = entry
        if batch.progress > index:
            del self.hung[path]
            log.info("statvfs(%s) returned again; no longer treated as hung", path)
            return False
        log.debug("statvfs(%s) still hung; byte counts omitted", path)
        return True

    def statvfs_many(self, paths: Sequence[str]) -> Dict[str, Optional[os.statvfs_result]]:
        """path -> result, or None when statvfs failed, timed out or is still hung."""
        out: Dict[str, Optional[os.statvfs_result]] = {}
        with self._lock:
            todo = [p for p in dict.fromkeys(paths) if not self._still_hung(p)]
            while todo:
                batch = _Batch(todo)
                self._submit(batch)
                todo = self._wait(batch)
                for path, res in zip(batch.paths, batch.results):
                    if isinstance(res, OSError):
                        log.debug("statvfs(%s): %s", path, res.strerror)
                    elif res is not None and path not in self.hung:
                        out[path] = res
        for path in paths:
            out.setdefault(path, None)
        return out

    def _wait(self, batch: _Batch) -> List[str]:
        """Wait for ``batch``; return the paths left to do after a hang."""
        seen = 0
        while not batch.done.acquire(timeout=self.timeout):
            index = batch.progress
            if index != seen:  # still moving: the last path was merely slow
                seen = index
                continue
            batch.abandoned = True
            self._abandon()
            path = batch.paths[index]
            self.hung[path] = (batch, index)
            log.warning("statvfs(%s) did not return within %.1f s; skipping it until it does",
                        path, self.timeout)
            rest = batch.paths[index + 1:]
            # Results past the stuck one may race with the abandoned helper: redo them.
            del batch.paths[index + 1:]
            return rest
        return []

    def statvfs(self, path: str) -> Optional[os.statvfs_result]:
        """One path (see :meth:`statvfs_many`)."""
        return self.statvfs_many([path])[path]

    def close(self) -> None:
        """Stop the idle helper thread (stuck ones exit when their call returns)."""
        with self._lock:
            self._abandon()
