"""QEMU's UTF-8 rules: which code points it accepts, and how it reads a C string."""
from __future__ import annotations

from qga.codec.lazyre import LazyPattern

__all__ = ["NONCHAR", "qemu_lossy_decode", "valid_codepoint"]

# Unicode noncharacters, which QEMU's mod_utf8_codepoint() rejects.
NONCHAR = LazyPattern("[\ufdd0-\ufdef\ufffe\uffff" + "".join(
    chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(1, 17)) + "]")


def valid_codepoint(cp: int) -> bool:
    """A code point QEMU's mod_utf8_codepoint() accepts (no surrogates, no noncharacters)."""
    return (0 <= cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF
            and not 0xFDD0 <= cp <= 0xFDEF and (cp & 0xFFFE) != 0xFFFE)


def qemu_lossy_decode(raw: bytes) -> str:
    """Decode a C string the way QEMU's JSON writer reads it.

    The string ends at the first NUL; C0 80 is U+0000; every invalid
    sequence (as delimited by mod_utf8_codepoint) becomes one U+FFFD.
    """
    raw = raw.split(b"\0", 1)[0]
    if raw.isascii():
        return raw.decode("ascii")
    try:
        text = raw.replace(b"\xc0\x80", b"\0").decode("utf-8")
        if not NONCHAR.search(text):
            return text
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        i += 1
        if b < 0x80:
            out.append(chr(b))
            continue
        if b >= 0xFE or not b & 0x40:      # impossible byte / stray continuation
            out.append("\ufffd")
            continue
        length, mask = 0, 0x80
        while b & mask:
            length += 1
            mask >>= 1
        cp = b & (mask - 1)
        for _k in range(1, length):
            if i >= n or raw[i] & 0xC0 != 0x80:
                cp = -1
                break
            cp = cp << 6 | raw[i] & 0x3F
            i += 1
        if cp >= 0 and valid_codepoint(cp):
            minimum = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
            if cp >= minimum or (cp == 0 and length == 2):
                out.append(chr(cp))
                continue
        out.append("\ufffd")
    return "".join(out)
