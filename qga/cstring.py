"""Request strings as qemu-ga hands them to the operating system.

QEMU's JSON parser stores U+0000 inside a string as modified UTF-8, the two
bytes C0 80, so the C string qemu-ga passes to open(), execve(), chpasswd or
a mount-point comparison does not end there: the path ``"f\\u0000x"`` names a
file called ``f\\xC0\\x80x``.  Python strings stand for bytes through
surrogateescape, so the same bytes are spelled ``"\\udcc0\\udc80"``; the JSON
writer prints them back as ``\\u0000``, as qemu-ga does.
"""
from __future__ import annotations

#: U+0000 in modified UTF-8 (C0 80), as a surrogateescape'd str.
NUL_AS_OS_TEXT = "\udcc0\udc80"


def os_text(text: str) -> str:
    """``text`` with each U+0000 turned into the bytes qemu-ga would pass on (C0 80)."""
    return text.replace("\0", NUL_AS_OS_TEXT) if "\0" in text else text


def os_bytes(text: str) -> bytes:
    """The bytes qemu-ga would pass on for ``text``."""
    return os_text(text).encode("utf-8", "surrogateescape")


def c_text(raw: bytes) -> str:
    """The C string in ``raw`` as text: up to the first NUL, or all of it (a full
    fixed-size field such as utmp's ``ut_user`` has no NUL).

    Invalid UTF-8 is kept through surrogateescape, so the reply prints the
    bytes as qemu-ga would.
    """
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
