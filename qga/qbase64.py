"""Base64 as qemu-ga reads and writes it, with an optional SIMD accelerator.

Decoding follows ``qbase64_decode`` + glib's decoder: qemu-ga first checks the
alphabet (``A-Z a-z 0-9 + / =`` and ``\\n``), then hands the text to glib,
which is lenient: it works in groups of four, drops a trailing partial group,
and treats ``=`` as a zero digit that removes an output byte only in the last
two positions of a group.  The common case (a well-formed string) goes
straight to a strict decoder; only groups with an ``=`` in an unusual place
take a slower path.

The codec is pybase64 (SIMD, several GB/s) when it is installed, else the
standard library's :mod:`binascii` (a few hundred MB/s).  Both give the same
bytes for every input; ``QGA_NO_ACCEL=1`` in the environment, or
:func:`use_accelerator`, forces the standard library.  pybase64 is imported at
the first use, not at start-up (it costs several milliseconds).
"""
from __future__ import annotations

import binascii
import os
from typing import Any, List, Union

from qga.errors import QgaError

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n"
_INVALID = "Base64 data contains invalid characters"

#: The pybase64 module, False when it is missing or disabled, None until first use.
_accel: Any = None


def _accelerator() -> Any:
    global _accel
    if _accel is None:
        use_accelerator(not os.environ.get("QGA_NO_ACCEL"))
    return _accel


def use_accelerator(enable: bool) -> bool:
    """Use pybase64 from now on if ``enable`` and it is installed; True if so."""
    global _accel
    _accel = False
    if enable:
        try:
            import pybase64
        except ImportError:
            pass
        else:
            _accel = pybase64
    return _accel is not False


def backend() -> str:
    """``"pybase64 VERSION"`` or ``"binascii"``: the codec in use."""
    accel = _accelerator()
    return f"pybase64 {accel.__version__}" if accel else "binascii"


def encode(data: Union[bytes, bytearray, memoryview]) -> bytes:
    """Standard base64 of ``data``: padded, no newline."""
    accel = _accelerator()
    return accel.b64encode(data) if accel else binascii.b2a_base64(data, newline=False)


def fast_canonical(data: Union[bytes, bytearray, memoryview]) -> bool:
    """True when the accelerator decodes ``data`` as canonical base64.

    Such data holds only ``A-Z a-z 0-9 + / =``: the JSON lexer uses this as a
    SIMD-speed proof that a long string stretch has no escape or control
    byte.  False without the accelerator (the check would cost more than the
    lexer's own scan) or when it cannot tell.
    """
    accel = _accelerator()
    if not accel:
        return False
    try:
        accel.b64decode(data, validate=True)
    except ValueError:  # binascii.Error
        return False
    return True


def decode(text: Union[str, bytes]) -> bytes:
    """Decode ``text`` exactly as qemu-ga would, or raise its error."""
    accel = _accelerator()
    if accel:
        # A strict decode accepts only canonical base64 (alphabet, length a
        # multiple of four, padding at the end), on which glib agrees; it
        # also checks the alphabet, so well-formed input costs one pass.
        try:
            decoded: bytes = accel.b64decode(text, validate=True)
            return decoded
        except ValueError:  # binascii.Error
            pass
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
    run = _run_decoder(accel)
    eq = raw.find(b"=")
    if eq < 0 or _plain_padding(raw, eq):
        return run(raw) if raw else b""
    return _decode_lenient(raw, run)


def _run_decoder(accel: Any) -> Any:
    """Decoder for text already known to be canonical base64."""
    if accel:
        return lambda raw: accel.b64decode(raw, validate=True)
    return binascii.a2b_base64


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


def _decode_lenient(raw: bytes, run: Any) -> bytes:
    """Slow path: decode clean runs in bulk, odd groups one at a time."""
    parts: List[bytes] = []
    start = 0
    pos = raw.find(b"=")
    while pos >= 0:
        group = pos - pos % 4
        if group > start:
            parts.append(run(raw[start:group]))
        parts.append(_group(raw[group:group + 4]))
        start = group + 4
        pos = raw.find(b"=", start)
    if start < len(raw):
        parts.append(run(raw[start:]))
    return b"".join(parts)
