"""Opening and reading /proc, /sys and other small files."""
from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import Callable, Dict, Generic, List, Optional, Tuple, TypeVar

from qga.errors import InternalError

T = TypeVar("T")


class StepError(InternalError):
    """A sysfs step that failed: ``step`` (``opendir``, ``open``, ``pread``...) on
    ``name`` in the directory ``path`` (``name`` None for the directory itself),
    with the OSError met (None when a read found nothing).  The command layer words it."""

    def __init__(self, step: str, path: str, name: Optional[str] = None,
                 cause: Optional[OSError] = None) -> None:
        target = path if name is None else f"{path}{name}"
        super().__init__(f"{step} {target}: {cause.strerror if cause else 'unexpected EOF'}")
        self.step = step
        self.path = path
        self.name = name
        self.cause = cause

    @property
    def errno(self) -> int:
        """The failed call's errno, 0 for an unexpected EOF."""
        return (self.cause.errno or 0) if self.cause else 0


def read_fd(fd: int) -> bytes:
    """Everything left to read on ``fd`` (sizes of /proc files are not known up front)."""
    chunks: List[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def read_file(path: str) -> bytes:
    """The whole of ``path`` in open, read, read (EOF), close: the fewest syscalls,
    where a Python file object adds fstat, ioctl and lseek calls.  OSError as raised."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_fd(fd)
    finally:
        os.close(fd)


def _pread_all(fd: int, single: bool = False) -> bytes:
    """The whole text of a /proc file from offset 0 (it is generated afresh then).

    ``single``: the file is one seq_file record (single_open: /proc/stat), which
    the kernel generates whole before the first read copies any of it, so a
    read shorter than asked for is the whole text and no read for EOF follows.
    A file of many records (mountinfo, diskstats) can return a short read at a
    page boundary, so it is read until EOF.
    """
    chunks: List[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if single and not offset and len(chunk) < 65536:
            return chunk
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


class ProcWatch:
    """A pollable /proc file (mounts, mountinfo) kept open, to learn whether it changed.

    The kernel flags such a file POLLPRI once after any mount, unmount or
    move in its mount namespace since the previous poll of the same open file
    (proc(5)), so "unchanged" costs one poll().  Not thread-safe: the caller
    holds one lock across :meth:`changed` and :meth:`read`.
    """

    def __init__(self, path: str) -> None:
        """Open ``path``; OSError when it cannot be."""
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLPRI)

    def changed(self) -> bool:
        """Whether the file changed since the previous call (or since it was opened)."""
        return bool(self._poll.poll(0))

    def read(self) -> bytes:
        """The file's text now; OSError as raised."""
        return _pread_all(self.fd)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


class _Kept:
    """One /proc file's descriptor, kept open for the process's life."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        #: Held across one read, whose chunks follow each other by offset.
        self.lock = threading.Lock()


_KEPT: Dict[str, _Kept] = {}
_KEPT_LOCK = threading.Lock()  # only while an entry is looked up, added or dropped


def read_proc(path: str, single: bool = False) -> bytes:
    """:func:`read_file` for a /proc file read often, through a descriptor kept open.

    Reading from offset 0 (pread) makes the kernel generate the text afresh,
    so only the open, close and path walk of each call are saved.  /proc
    entries are never replaced, so the descriptor cannot go stale; any other
    path (a test's copy may be renamed over) is opened each time.  ``single``:
    see :func:`_pread_all`.
    """
    if not path.startswith("/proc/"):
        return read_file(path)
    with _KEPT_LOCK:
        kept = _KEPT.get(path)
        if kept is None:
            kept = _KEPT[path] = _Kept(path)
    with kept.lock:
        try:
            if kept.fd >= 0:
                return _pread_all(kept.fd, single)
        except OSError:  # not seen on procfs; dropped, and a fresh open says what is wrong
            with _KEPT_LOCK:
                if _KEPT.get(path) is kept:
                    del _KEPT[path]
            with contextlib.suppress(OSError):  # EBADF: it was closed already
                os.close(kept.fd)
            kept.fd = -1  # for a reader that took this entry before it was dropped
    return read_file(path)


def open_dir(path: str) -> int:
    """A directory descriptor for ``*at`` calls; StepError ``opendir`` when it cannot be opened."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StepError("opendir", path, cause=exc) from None


class FileCache(Generic[T]):
    """Values computed from files, recomputed only when a file's stat changes.

    Each call costs one stat(): device, inode, size, mtime and ctime are
    compared with those the cached value was computed under.  A file changed
    less than ``settle_ns`` ago is not cached, as two writes within one
    timestamp tick (file times come from a coarse clock) would leave its
    stat unchanged.
    """

    def __init__(self, load: Callable[[str], T], settle_ns: int = 100_000_000) -> None:
        """``load(path)`` computes the value of one file."""
        self._load = load
        self.settle_ns = settle_ns
        self._entries: Dict[str, Tuple[Tuple[int, ...], T]] = {}

    def get(self, path: str) -> T:
        """The value of ``path``; OSError when it cannot be stat'ed (or from ``load``)."""
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        entry = self._entries.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
        value = self._load(path)
        if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) >= self.settle_ns:
            self._entries[path] = (key, value)
        else:
            self._entries.pop(path, None)
        return value
