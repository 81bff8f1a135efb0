"""os-release parsing for guest-get-osinfo, with qemu-ga's quirks.

qemu-ga reads the file as a glib key file (a synthetic ``[os-release]``
header is prepended), so a single line that is not ``KEY=VALUE``, a comment
or blank invalidates the whole file, as does non-UTF-8 content.  The raw
value is then post-processed (see :func:`unquote`).  Works on Python 3.9,
which lacks :func:`platform.freedesktop_os_release` (and that function's
shell-style unquoting differs anyway).  Its key-file reader is not
:func:`qga.keyfile.parse`, which trims and unescapes (see :mod:`qga.keyfile`).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

#: os-release key -> GuestOSInfo member, in the order qemu-ga fills them.
FIELDS = (
    ("ID", "id"), ("NAME", "name"), ("PRETTY_NAME", "pretty-name"),
    ("VERSION", "version"), ("VERSION_ID", "version-id"),
    ("VARIANT", "variant"), ("VARIANT_ID", "variant-id"),
)

DEFAULT_PATHS = ("/etc/os-release", "/usr/lib/os-release")
GROUP = "os-release"


def _valid_key(key: str) -> bool:
    """glib's key-name rule: non-empty, no edge spaces, optional ``[locale]``."""
    if not key or key[0] == " " or key[-1] == " ":
        return False
    end = 0
    while end < len(key) and key[end] not in "=[]":
        end += 1
    if end == 0:
        return False
    if end == len(key):
        return True
    if key[end] != "[" or not key.endswith("]"):
        return False
    locale = key[end + 1:-1]
    return all(c.isalnum() or c in "-_.@" for c in locale)


def parse_keyfile(text: str) -> Optional[Dict[str, Dict[str, str]]]:
    """Groups of raw values as glib loads them, or None on any parse error."""
    groups: Dict[str, Dict[str, str]] = {}
    current: Optional[Dict[str, str]] = None
    lines = text.split("\n")
    for n, raw in enumerate(lines):
        # glib drops a CR only before a newline, not on an unterminated last line.
        if raw.endswith("\r") and n < len(lines) - 1:
            raw = raw[:-1]
        line = raw.lstrip(" \t\n\v\f\r")
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            name = line[1:].rstrip(" \t")
            if not name.endswith("]") or len(name) < 2 or any(c in "[]" for c in name[:-1]):
                return None
            current = groups.setdefault(name[:-1], {})
            continue
        if "=" not in line or current is None:
            return None
        key, value = line.split("=", 1)
        key = key.rstrip(" \t\n\v\f\r")
        if not _valid_key(key):
            return None
        value = value.lstrip(" \t\n\v\f\r")
        if key == "Encoding" and value != "UTF-8":
            return None  # glib: "unsupported encoding"
        current[key] = value
    return groups


def unquote(value: str) -> str:
    """qemu-ga's value post-processing, byte-compatible including its bugs.

    Unquoted: cut at the first space and at the first ``;``.  Double-quoted:
    copy up to the next unescaped ``"``, unescaping ``\\$ \\" \\' \\` \\\\``
    and keeping other backslashes.  The copy is done in place in C, so an
    unterminated value keeps the tail of the original buffer after the
    copied characters (``"abc`` gives ``abcc``).
    """
    if not value.startswith('"'):
        return value.split(" ", 1)[0].split(";", 1)[0]
    out: List[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in "$'\"\\`":
            i += 1
            c = value[i]
        elif c == '"':
            return "".join(out)
        out.append(c)
        i += 1
    return "".join(out) + value[len(out):]


def parse_os_release(text: str) -> Optional[Dict[str, str]]:
    """GuestOSInfo members from os-release text, or None if glib rejects it."""
    # g_key_file_load_from_data(-1) stops at the first NUL, like strlen().
    groups = parse_keyfile(f"[{GROUP}]\n" + text.split("\0", 1)[0])
    if groups is None:
        return None
    values = groups.get(GROUP, {})
    return {member: unquote(values[key]) for key, member in FIELDS if key in values}


def load(path: str) -> Optional[Dict[str, str]]:
    """The os-release members of ``path``; None when it cannot be read or glib rejects it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        text = data.split(b"\0", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_os_release(text)


def read_os_release(env: Optional[str] = None, paths: Sequence[str] = DEFAULT_PATHS,
                    reader: Callable[[str], Optional[Dict[str, str]]] = load) -> Dict[str, str]:
    """The os-release members: ``$QGA_OS_RELEASE`` if set, else the first usable path.

    As in qemu-ga, an unreadable or unparsable /etc/os-release falls back to
    /usr/lib/os-release, but an explicit ``QGA_OS_RELEASE`` has no fallback.
    ``reader`` is :func:`load` or a caching equivalent.
    """
    if env is None:
        env = os.environ.get("QGA_OS_RELEASE")
    candidates = (env,) if env is not None else tuple(paths)
    for path in candidates:
        info = reader(path)
        if info is not None:
            return info
    return {}


@functools.lru_cache(maxsize=None)
def kernel_info() -> Tuple[Tuple[str, str], ...]:
    """The uname members of GuestOSInfo: a kernel's release, version and machine never change under it."""
    uts = os.uname()
    return (("kernel-release", uts.release), ("kernel-version", uts.version), ("machine", uts.machine))


def osinfo(release: Dict[str, str]) -> Dict[str, str]:
    """The whole GuestOSInfo in schema order: uname fields, then the os-release members."""
    info = dict(kernel_info())
    info.update(release)  # parse_os_release's members are in schema order
    return info
