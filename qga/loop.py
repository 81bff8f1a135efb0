"""A small epoll event loop (asyncio costs start-up time and memory).

One thread owns the loop; the command worker hands results back with
:meth:`Loop.call_soon_threadsafe`.  Signals arrive through
``signal.set_wakeup_fd`` and are dispatched on the loop thread, so handlers
never run inside a signal frame.  Children registered with
:meth:`Loop.add_child_handler` are reaped on SIGCHLD with ``waitpid(pid,
WNOHANG)``; other children (helpers run with ``subprocess.run``) are left to
their owners.
"""
from __future__ import annotations

import heapq
import itertools
import os
import select
import signal
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from qga.log import get_logger

log = get_logger(__name__)

Callback = Callable[..., Any]

_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_NOT_OUT, _NOT_IN = ~select.EPOLLOUT, ~select.EPOLLIN


class Timer:
    """A pending :meth:`Loop.call_later` callback."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callback, args: Tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the callback."""
        self.cancelled = True


class Loop:
    """Readers, writers, timers, thread-safe callbacks, signals and children."""

    def __init__(self) -> None:
        self._ep = select.epoll()
        #: fd -> (reader, writer, epoll mask); kept here so that a lookup of an
        #: unwatched fd is a dict miss, not a KeyError raised by selectors.
        self._fds: Dict[int, Tuple[Optional[Callback], Optional[Callback], int]] = {}
        self._timers: List[Tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._pending: Deque[Tuple[Callback, Tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._update(self._wake_r, self._on_wakeup, None)
        self._signals: Dict[int, Callback] = {}
        self._children: Dict[int, Callback] = {}
        self._running = False

    # -- file descriptors -------------------------------------------------
    def _update(self, fd: int, reader: Optional[Callback], writer: Optional[Callback]) -> None:
        mask = (_IN if reader else 0) | (_OUT if writer else 0)
        old = self._fds.get(fd)
        if old is None:
            if mask:
                self._ep.register(fd, mask)
                self._fds[fd] = (reader, writer, mask)
            return
        if not mask:
            del self._fds[fd]
            # try/except, not contextlib.suppress: this runs twice per reconnect.
            try:  # noqa: SIM105
                self._ep.unregister(fd)
            except OSError:
                pass  # already closed: the kernel dropped it from the set
            return
        if mask != old[2]:
            try:
                self._ep.modify(fd, mask)
            except FileNotFoundError:  # closed and reused without unregistering
                self._ep.register(fd, mask)
        self._fds[fd] = (reader, writer, mask)

    def _callbacks(self, fd: int) -> Tuple[Optional[Callback], Optional[Callback]]:
        entry = self._fds.get(fd)
        return (entry[0], entry[1]) if entry is not None else (None, None)

    def add_reader(self, fd: int, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fd`` is readable (or hung up)."""
        self._update(fd, callback, self._callbacks(fd)[1])

    def remove_reader(self, fd: int) -> None:
        """Stop watching ``fd`` for input."""
        self._update(fd, None, self._callbacks(fd)[1])

    def forget(self, fd: int) -> None:
        """Stop watching ``fd`` for anything (before it is closed)."""
        self._update(fd, None, None)

    def add_writer(self, fd: int, callback: Callback) -> None:
        """Call ``callback()`` whenever ``fd`` is writable."""
        self._update(fd, self._callbacks(fd)[0], callback)

    def remove_writer(self, fd: int) -> None:
        """Stop watching ``fd`` for writability."""
        self._update(fd, self._callbacks(fd)[0], None)

    # -- time ---------------------------------------------------------------
    def call_later(self, delay: float, callback: Callback, *args: Any) -> Timer:
        """Run ``callback(*args)`` on the loop after ``delay`` seconds (loop thread only)."""
        timer = Timer(time.monotonic() + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon_threadsafe(self, callback: Callback, *args: Any) -> None:
        """Run ``callback(*args)`` on the loop thread; callable from any thread."""
        with self._lock:
            self._pending.append((callback, args))
        # try/except, not contextlib.suppress: this runs once per worker command.
        try:  # noqa: SIM105
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already awake

    # -- signals and children -------------------------------------------------
    def add_signal_handler(self, signum: int, callback: Callback) -> None:
        """Run ``callback(signum)`` on the loop when the signal arrives."""
        self._signals[signum] = callback
        signal.signal(signum, lambda *_: None)  # the wakeup fd carries the number
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def add_child_handler(self, pid: int, callback: Callable[[int, int], Any]) -> None:
        """Reap ``pid`` when it exits and call ``callback(pid, wait_status)``.

        Callable from any thread.  The agent routes SIGCHLD to
        :meth:`reap_children` at start-up (signal handlers can only be set
        from the main thread).
        """
        with self._lock:
            self._children[pid] = callback
        self.call_soon_threadsafe(self.reap_children)  # it may have exited already

    def reap_children(self) -> None:
        """Reap every watched child that has exited (loop thread)."""
        with self._lock:
            pids = list(self._children)
        for pid in pids:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                with self._lock:
                    callback = self._children.pop(pid)
                self._run(callback, (pid, status))

    def _on_wakeup(self) -> None:
        try:
            data = os.read(self._wake_r, 4096)
        except BlockingIOError:
            data = b""
        for byte in set(data):
            if byte and byte in self._signals:
                self._run(self._signals[byte], (byte,))

    # -- running --------------------------------------------------------------
    @staticmethod
    def _run(callback: Callback, args: Tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception:  # a callback bug must never stop the agent
            log.exception("unexpected error in event loop callback %r", callback)

    def stop(self) -> None:
        """Make :meth:`run` return after the current iteration."""
        self._running = False

    def run(self) -> None:
        """Run until :meth:`stop`."""
        self._running = True
        fds = self._fds
        while self._running:
            timeout = -1.0
            if self._pending:
                timeout = 0
            elif self._timers:
                timeout = max(0.0, self._timers[0][0] - time.monotonic())
            for fd, events in self._ep.poll(timeout):  # rounds a timeout up to whole ms
                entry = fds.get(fd)
                if entry is None:
                    continue
                reader, writer = entry[0], entry[1]
                # As selectors does: HUP and ERR wake both the reader and the writer.
                if reader and events & _NOT_OUT:
                    self._run(reader, ())
                if writer and events & _NOT_IN:
                    # The reader may have unregistered this fd meanwhile.
                    entry = fds.get(fd)
                    if entry is not None and entry[1] is writer:
                        self._run(writer, ())
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                timer = heapq.heappop(self._timers)[2]
                if not timer.cancelled:
                    self._run(timer.callback, timer.args)
            while self._pending:
                with self._lock:
                    callback, args = self._pending.popleft()
                self._run(callback, args)
                # Let go now: a worker's result (a 64 MiB file read) would
                # otherwise stay alive until the next callback, beside the next one.
                del callback, args

    def close(self) -> None:
        """Release the loop's own descriptors."""
        if self._signals:
            signal.set_wakeup_fd(-1)
        self._ep.close()
        self._fds.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)
