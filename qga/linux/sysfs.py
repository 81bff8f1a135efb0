"""Opening /proc and /sys objects with QEMU 10.2's error text."""
from __future__ import annotations

import os

from qga.errors import QgaError, os_error


def could_not_open(path: str, exc: OSError) -> QgaError:
    """``Could not open '<path>': <strerror>`` (10.2's wording for every reader)."""
    return os_error(f"Could not open '{path}'", exc, path)


def open_dir(path: str) -> int:
    """A directory descriptor for ``*at`` calls; QgaError when it cannot be opened."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise could_not_open(path, exc) from None
