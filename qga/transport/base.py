"""The common part of every channel: non-blocking reads, buffered writes.

A transport reads whatever arrives and hands it to ``on_data``; the JSON
stream parser does all framing.  Writes are queued and flushed as the
descriptor becomes writable, so a host that reads slowly never blocks the
agent.  Subclasses decide what end-of-file means (host detached on a
virtio port, client gone on a socket).
"""
from __future__ import annotations

import errno
import os
from collections import deque
from itertools import chain, islice
from typing import Callable, Deque, List, Optional

from qga.codec import Reply
from qga.loop import Loop
from qga.log import get_logger

log = get_logger(__name__)

READ_SIZE = 256 * 1024
#: Replies still unwritten beyond this are dropped (oldest first) so a host that
#: never reads cannot make the agent grow without bound.
MAX_PENDING_OUTPUT = 256 * 1024 * 1024

_IOV_MAX = 1024

_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EIO, errno.ENODEV, errno.ENXIO, errno.EBADF)


class Transport:
    """Base class: subclasses set ``self.fd`` and implement the EOF policy."""

    def __init__(self, loop: Loop, path: str, on_data: Callable[[memoryview], None],
                 on_error: Callable[[str], None],
                 read_buffer: Optional[Callable[[int], memoryview]] = None) -> None:
        """``on_data`` gets what each read returned, as a view that is only valid
        during the call.  ``read_buffer(size)`` gives the writable view (at
        least ``size`` bytes) the next read goes into; the agent passes the
        JSON parser's, so a request is read straight into the buffer it is
        lexed in.  By default the transport reads into a buffer of its own.
        """
        self.loop = loop
        self.path = path
        self.on_data = on_data
        self.on_error = on_error
        self.fd: Optional[int] = None
        # One list of views per queued reply, so that dropping never cuts one.
        self._out: Deque[List[memoryview]] = deque()
        self._out_bytes = 0
        self._head_started = False   # part of _out[0] is already written
        self._reading = False
        self._paused = False
        self._writing = False
        self._corked = 0
        self._read_buffer = read_buffer or self._own_buffer
        self._rview: Optional[memoryview] = None

    # -- subclass interface -----------------------------------------------------
    def open(self) -> None:
        """Open the channel (raise OSError on failure)."""
        raise NotImplementedError

    def on_eof(self) -> None:
        """The peer side is gone or not there (EOF)."""
        raise NotImplementedError

    def on_io_error(self, exc: OSError) -> None:
        """A hard error on the descriptor."""
        self.on_error(f"channel {self.path}: {exc.strerror}")

    def close(self) -> None:
        """Release every descriptor."""
        self._detach_fd()

    # -- reading ---------------------------------------------------------------
    def _want_reading(self) -> None:
        fd = self.fd
        want = fd is not None and not self._paused
        if fd is not None and want != self._reading:
            if want:
                self.loop.add_reader(fd, self._on_readable)
            else:
                self.loop.remove_reader(fd)
        self._reading = want

    def pause_reading(self) -> None:
        """Backpressure: stop reading until :meth:`resume_reading`."""
        self._paused = True
        self._want_reading()

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`."""
        self._paused = False
        self._want_reading()

    def _own_buffer(self, size: int) -> memoryview:
        if self._rview is None or len(self._rview) < size:
            self._rview = memoryview(bytearray(size))
        return self._rview

    def _on_readable(self) -> None:
        # Into a buffer kept across reads: os.read(fd, READ_SIZE) would
        # allocate (and fault in) READ_SIZE bytes for every small request.
        view = self._read_buffer(READ_SIZE)
        try:
            n = os.readv(self.fd, [view])  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.on_io_error(exc)
            return
        if n:
            self.on_data(view[:n])
        else:
            self.on_eof()

    # -- writing ---------------------------------------------------------------
    def write(self, data: Reply) -> None:
        """Queue a reply and write as much as the descriptor takes now (unless corked).

        A reply in pieces (a 64 MiB file read: head, base64, tail) leaves in
        one ``writev`` of the pieces, never joined into one more copy.
        """
        if isinstance(data, bytes):
            views = [memoryview(data)]
            size = len(data)
        else:
            views = [memoryview(p) for p in data if p]
            size = sum(map(len, views))
        if not size:
            return
        out = self._out
        out.append(views)
        self._out_bytes += size
        while self._out_bytes > MAX_PENDING_OUTPUT and len(out) > 1:
            victim = 1 if self._head_started else 0   # never the one half written
            if victim == len(out) - 1:
                break
            dropped = sum(map(len, out[victim]))
            del out[victim]
            self._out_bytes -= dropped
            log.warning("host is not reading: dropped a reply of %d bytes", dropped)
        if not self._corked:
            self._flush()

    def cork(self) -> None:
        """Hold writes until :meth:`uncork`, so that the replies to a batch of
        pipelined requests leave in one ``writev`` instead of one write each."""
        self._corked += 1

    def uncork(self) -> None:
        """Undo :meth:`cork` and write what was queued meanwhile."""
        self._corked -= 1
        if not self._corked and self._out:
            self._flush()

    def _flush(self) -> None:
        fd = self.fd
        out = self._out
        while out and fd is not None:
            try:
                head = out[0]
                if len(out) == 1 and len(head) == 1:
                    n = os.write(fd, head[0])
                else:
                    n = os.writev(fd, list(islice(chain.from_iterable(out), _IOV_MAX)))
            except (BlockingIOError, InterruptedError):
                if not self._writing:
                    self._writing = True
                    self.loop.add_writer(fd, self._flush)
                return
            except OSError as exc:
                if exc.errno in _GONE:
                    log.warning("failed to write reply: %s", exc.strerror)
                    self.drop_output()
                    break
                raise
            self._out_bytes -= n
            while n:
                head = out[0]
                chunk = head[0]
                if n < len(chunk):
                    head[0] = chunk[n:]
                    self._head_started = True
                    break
                n -= len(chunk)
                if len(head) > 1:
                    del head[0]
                    self._head_started = True
                else:
                    out.popleft()
                    self._head_started = False
        if self._writing and fd is not None:
            self._writing = False
            self.loop.remove_writer(fd)

    def drop_output(self) -> None:
        """Forget unwritten replies (the client they were for is gone)."""
        self._out.clear()
        self._out_bytes = 0
        self._head_started = False

    # -- helpers for subclasses ------------------------------------------------
    def _attach_fd(self, fd: int) -> None:
        self.fd = fd
        self._reading = False
        self._want_reading()
        if self._out:
            self._flush()

    def _detach_fd(self) -> None:
        fd = self.fd
        if fd is None:
            return
        if self._reading or self._writing:
            self.loop.forget(fd)
        self._reading = False
        self._writing = False
        self.fd = None
        os.close(fd)
