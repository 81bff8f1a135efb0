"""Opening and reading /proc, /sys and other small files."""
from __future__ import annotations

import os
from typing import List, Optional

from qga.errors import InternalError


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


def open_dir(path: str) -> int:
    """A directory descriptor for ``*at`` calls; StepError ``opendir`` when it cannot be opened."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StepError("opendir", path, cause=exc) from None
