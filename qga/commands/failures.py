"""qemu-ga's texts for the failures qga.linux reports, where several command
modules meet the same one (declares no command)."""
from __future__ import annotations

from qga.errors import QgaError, os_error


def could_not_open(path: str, exc: OSError) -> QgaError:
    """``Could not open '<path>': <strerror>`` (10.2's wording for every reader)."""
    return os_error(f"Could not open '{path}'", exc, path)
