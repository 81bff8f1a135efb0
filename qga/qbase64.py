"""Base64 input as qemu-ga accepts it (``qbase64_decode`` + glib's decoder).

qemu-ga first checks the alphabet (``A-Z a-z 0-9 + / =`` and ``\\n``), then
hands the text to glib, which is lenient: it works in groups of four, drops a
trailing partial group, and treats ``=`` as a zero digit that removes an
output byte only in the last two positions of a group.  The common case (a
well-formed string) goes straight to :func:`binascii.a2b_base64`; only groups
with an ``=`` in an unusual place take a slower path.
"""
from __future__ import annotations

import binascii
from typing import List, Union

from qga.errors import QgaError

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
_INVALID = "Base64 data contains invalid characters"


def decode(text: Union[str, bytes]) -> bytes:
    """Decode ``text`` exactly as qemu-ga would, or raise its error."""
    if isinstance(text, str):
        # A U+0000 reaches qemu-ga as C0 80, which is not in the alphabet: no
        # special case, the check below rejects it as qemu-ga does.
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise QgaError(_INVALID) from None
    else:
        raw = text
    if raw.translate(None, _ALPHABET):
        raise QgaError(_INVALID)
    if b"\n" in raw:
        raw = raw.replace(b"\n", b"")  # glib skips characters outside the alphabet
    usable = len(raw) - len(raw) % 4  # a trailing partial group is dropped
    if usable != len(raw):
        raw = raw[:usable]
    eq = raw.find(b"=")
    if eq < 0 or _plain_padding(raw, eq):
        return binascii.a2b_base64(raw) if raw else b""
    return _decode_lenient(raw)


def _plain_padding(raw: bytes, first_eq: int) -> bool:
    """True when the only ``=`` are standard padding of the last group."""
    return first_eq >= len(raw) - 2 and raw[first_eq:] in (b"=", b"==")


def _group(chunk: bytes) -> bytes:
    """glib's rule for one group that contains ``=``."""
    decoded = binascii.a2b_base64(chunk.replace(b"=", b"A"))
    out = decoded[:1]
    if chunk[2:3] != b"=":
        out += decoded[1:2]
    if chunk[3:4] != b"=":
        out += decoded[2:3]
    return out


def _decode_lenient(raw: bytes) -> bytes:
    """Slow path: decode clean runs in bulk, odd groups one at a time."""
    parts: List[bytes] = []
    start = 0
    pos = raw.find(b"=")
    while pos >= 0:
        group = pos - pos % 4
        if group > start:
            parts.append(binascii.a2b_base64(raw[start:group]))
        parts.append(_group(raw[group:group + 4]))
        start = group + 4
        pos = raw.find(b"=", start)
    if start < len(raw):
        parts.append(binascii.a2b_base64(raw[start:]))
    return b"".join(parts)
