"""One guest-file handle: a raw descriptor opened the way qemu-ga opens it.

qemu-ga wraps the descriptor in a stdio ``FILE``; we use the descriptor
directly (``readv`` into a preallocated buffer, ``os.write`` of a memoryview),
which is what makes bulk transfers fast.  What a client can observe stays
the same: the position after a write is the end of what was written, so a
write followed by a read returns 0 bytes with ``eof`` true; ``eof`` is true
when a read hit end-of-file; a write on a read-only handle fails with EBADF.
The only differences are that a write error is reported by the write itself
rather than by a later flush, and that a read interrupted by EAGAIN returns
what it already got instead of an error.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple
from qga.errors import InternalError

#: fopen mode -> (open flags, readable, writable).  Same table as qemu-ga.
_R, _W, _RW = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
_CREAT_TRUNC = os.O_CREAT | os.O_TRUNC
_CREAT_APPEND = os.O_CREAT | os.O_APPEND
MODES = {
    "r": _R, "rb": _R,
    "w": _W | _CREAT_TRUNC, "wb": _W | _CREAT_TRUNC,
    "a": _W | _CREAT_APPEND, "ab": _W | _CREAT_APPEND,
    "r+": _RW, "rb+": _RW, "r+b": _RW,
    "w+": _RW | _CREAT_TRUNC, "wb+": _RW | _CREAT_TRUNC, "w+b": _RW | _CREAT_TRUNC,
    "a+": _RW | _CREAT_APPEND, "ab+": _RW | _CREAT_APPEND, "a+b": _RW | _CREAT_APPEND,
}

#: Files created by guest-file-open get this mode whatever the umask.
NEW_FILE_MODE = 0o666


class OpenError(InternalError):
    """An open step failed: ``step`` names it (open, chmod), ``exc`` the OSError."""

    def __init__(self, step: str, exc: OSError) -> None:
        super().__init__(step, exc)
        self.step = step
        self.exc = exc


class GuestFile:
    """An open guest file.  Every method raises OSError with the kernel's errno."""

    __slots__ = ("fd", "path", "mode", "_buf")

    def __init__(self, fd: int, path: str, mode: str) -> None:
        self.fd = fd
        self.path = path
        self.mode = mode
        self._buf: Optional[bytearray] = None

    @classmethod
    def open(cls, path: str, mode: str, nofollow: bool = False) -> "GuestFile":
        """Open like qemu-ga: exclusive create first so a new file gets 0666.

        ``mode`` must be a key of :data:`MODES`.
        """
        flags = MODES[mode] | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
        if nofollow:
            flags |= os.O_NOFOLLOW
        created = bool(flags & os.O_CREAT)
        try:
            fd = os.open(path, flags | (os.O_EXCL if created else 0), 0)
        except FileExistsError:
            created = False
            try:
                fd = os.open(path, flags & ~os.O_CREAT)
            except OSError as exc:
                raise OpenError("open", exc) from None
        except OSError as exc:
            raise OpenError("open", exc) from None
        if created:
            try:
                os.fchmod(fd, NEW_FILE_MODE)
            except OSError as exc:
                os.close(fd)
                os.unlink(path)
                raise OpenError("chmod", exc) from None
        if mode[0] == "a" and "+" not in mode:
            # glibc's fdopen("a") positions a write-only stream at the end.
            os.lseek(fd, 0, os.SEEK_END)
        return cls(fd, path, mode)

    def read(self, count: int) -> Tuple[memoryview, bool]:
        """Up to ``count`` bytes and whether end-of-file was reached.

        The bytes are a view of a buffer that the handle's next read reuses
        (a 48 MiB chunk costs no fresh allocation and page faults each time):
        use them before reading again.
        """
        if count == 0:
            return memoryview(b""), False
        buf = self._buf
        if buf is None or not len(buf) // 2 < count <= len(buf):  # no big buffer for small reads
            buf = self._buf = bytearray(count)
        view = memoryview(buf)[:count]
        total = 0
        eof = False
        while total < count:
            try:
                n = os.readv(self.fd, [view[total:]])  # straight into our buffer
            except BlockingIOError:  # EAGAIN on a non-blocking pipe or FIFO
                if total == 0:
                    raise
                break
            if n == 0:
                eof = True
                break
            total += n
        return view[:total], eof

    def write(self, data: memoryview) -> int:
        """Write all of ``data`` (or what a non-blocking peer accepts); bytes written."""
        if self.mode[0] == "r" and "+" not in self.mode:
            raise OSError(9, os.strerror(9))  # EBADF: stdio refuses writes on "r"
        total = 0
        size = len(data)
        while total < size:
            try:
                total += os.write(self.fd, data[total:])
            except BlockingIOError:
                if total == 0:
                    raise
                break
        return total

    def seek(self, offset: int, whence: int) -> int:
        """New position."""
        return os.lseek(self.fd, offset, whence)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)
