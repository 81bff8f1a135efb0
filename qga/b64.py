"""Base64 decoding exactly as qemu-ga does it (QEMU's qbase64_decode + glib).

qemu-ga first checks the alphabet (``A-Z a-z 0-9 + / =`` and ``\\n`` only),
then decodes with glib's lenient decoder: characters are consumed in groups of
four, a trailing partial group is silently dropped, and ``=`` is a zero digit
that suppresses an output byte only in the last two positions of a group.
Python's :mod:`base64` is stricter (padding errors), so it cannot be used.
"""
from __future__ import annotations

from qga.errors import QgaError

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_RANK = {c: i for i, c in enumerate(_ALPHABET)}
_RANK["="] = 0
_ALLOWED = frozenset(_ALPHABET + "=\n")


def decode_b64(text: str) -> bytes:
    """Decode ``text``; raise ``Base64 data contains invalid characters``."""
    # qemu-ga measures the input with strlen(): an embedded NUL ends it.
    text = text.split("\0", 1)[0]
    if not _ALLOWED.issuperset(text):
        raise QgaError("Base64 data contains invalid characters")
    out = bytearray()
    value = 0
    count = 0
    last = prev = ""
    for c in text:
        rank = _RANK.get(c)
        if rank is None:  # newline: skipped, as glib skips unknown bytes
            continue
        prev, last = last, c
        value = ((value << 6) | rank) & 0xFFFFFF
        count += 1
        if count == 4:
            out.append(value >> 16)
            if prev != "=":
                out.append((value >> 8) & 0xFF)
            if last != "=":
                out.append(value & 0xFF)
            count = 0
    return bytes(out)
