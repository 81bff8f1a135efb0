"""Opening and reading /proc, /sys and other small files (QEMU 10.2's error text)."""
from __future__ import annotations

import os
from typing import List

from qga.errors import QgaError, os_error


def could_not_open(path: str, exc: OSError) -> QgaError:
    """``Could not open '<path>': <strerror>`` (10.2's wording for every reader)."""
    return os_error(f"Could not open '{path}'", exc, path)


def read_fd(fd: int) -> bytes:
    """Everything left to read on ``fd`` (sizes of /proc files are not known up front)."""
    chunks: List[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def open_dir(path: str) -> int:
    """A directory descriptor for ``*at`` calls; QgaError when it cannot be opened."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise could_not_open(path, exc) from None
