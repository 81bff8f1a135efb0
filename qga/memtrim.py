"""Hand freed heap memory back to the system after heavy traffic.

glibc raises its mmap threshold to the size of the largest block freed so far
(up to 32 MiB), so after one big request later multi-megabyte strings come
from the heap instead of their own mappings; once freed they stay resident,
fragmented between small live objects (seen as RSS growing by tens of MiB
under a fuzzing host).  ``malloc_trim(0)`` returns every free page of the
heap.  ctypes is loaded on first use only: it costs start-up time.
"""
from __future__ import annotations

from typing import Callable, Union

#: malloc_trim once looked up; False when the C library has none.
_trim: Union[None, bool, Callable[[int], int]] = None


def release() -> None:
    """Return free heap pages to the system (no-op without glibc's malloc_trim)."""
    global _trim
    if _trim is None:
        import ctypes  # pylint: disable=import-outside-toplevel
        try:
            _trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
            _trim = False
    if callable(_trim):
        _trim(0)
