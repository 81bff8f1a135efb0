"""A reader and writer for GLib key files, the format of qemu-ga.conf and qga.state.

Only what qemu-ga relies on: ``[group]`` headers, ``key=value`` lines with the
white space around ``=`` ignored, ``#`` comments, GLib's value escapes, and
GLib's rejection of any other line.

:mod:`qga.linux.osrelease` reads the same format with its own, stricter
reader on purpose: guest-get-osinfo must give qemu-ga's raw values byte for
byte (``g_key_file_get_value``: trailing blanks and a CR on an unterminated
last line kept, only LF ends a line, GLib's key and group name checks, no
unescaping), while the config and state files want these trimmed, unescaped
strings.  One parser for both would change one of them.
"""
from __future__ import annotations

from typing import Dict
from qga.errors import InternalError

_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


class KeyFileError(InternalError, ValueError):
    """The text is not a valid key file; the message is GLib's wording."""


def _unescape(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt not in _ESCAPES:
                raise KeyFileError(f"Key file contains escape sequence “\\{nxt}” which is invalid")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse(text: str) -> Dict[str, Dict[str, str]]:
    """Groups of raw (unescaped) string values.  Later duplicates win."""
    groups: Dict[str, Dict[str, str]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = groups.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise KeyFileError(
                f"Key file contains line “{raw}” which is not a key-value pair, group, or comment")
        if current is None:
            raise KeyFileError("Key file does not start with a group")
        current[key.strip()] = _unescape(value.strip())
    return groups


def parse_bool(key: str, value: str) -> bool:
    """GLib's boolean: ``true``/``false``/``1``/``0`` and nothing else."""
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise KeyFileError(f"Key file contains key “{key}” which has a value that cannot be interpreted.")


def escape(value: str) -> str:
    """Escape a value as GLib writes it (leading space, newlines, backslashes)."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    if out.startswith(" "):
        out = "\\s" + out[1:]
    return out


def dump(groups: Dict[str, Dict[str, str]]) -> str:
    """Render groups in insertion order, one ``key=value`` per line."""
    parts = []
    for name, entries in groups.items():
        parts.append(f"[{name}]\n")
        parts.extend(f"{k}={escape(v)}\n" for k, v in entries.items())
    return "".join(parts)
