"""The mount list qemu-ga works on (freeze, thaw, fstrim, fsinfo).

Read from ``/proc/self/mountinfo`` (falling back to ``/proc/self/mounts``):
only block-device filesystems (non-zero major), btrfs through its source
device, octal escapes decoded, and (QEMU 10.0+) later mounts of an already
seen device dropped, so bind mounts are not frozen twice.
"""
from __future__ import annotations

import fnmatch
import os
import re
import stat
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from qga.linux.sysfs import ProcWatch, read_file

_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One entry of the mount list."""

    dirname: str
    devtype: str
    devmajor: int
    devminor: int
    source: str


def decode_octal(text: str) -> str:
    """Undo the kernel's ``\\040``-style escaping of mount fields."""
    if "\\" not in text:
        return text
    raw = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)
    # The escapes encode bytes; re-decode them as the file-system encoding.
    return os.fsdecode(raw.encode("latin-1", "surrogateescape"))


def _block_dev_of(source: str) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(source)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _keep(devtype: str, major: int, minor: int, source: str) -> Optional[Tuple[int, int]]:
    if major == 0:
        if devtype != "btrfs":
            return None
        return _block_dev_of(source)
    return major, minor


def parse_mountinfo(text: str) -> List[Mount]:
    """Mounts from mountinfo text, in mount order, filtered and deduplicated."""
    mounts: List[Mount] = []
    seen: Set[Tuple[int, int]] = set()
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            major_s, minor_s = fields[2].split(":")
            sep = fields.index("-", 6)
            devtype = fields[sep + 1]
            if major_s == "0" and devtype != "btrfs":
                continue  # most lines (proc, tmpfs, cgroup...): no block device, nothing else to decode
            dirname, source = fields[4], fields[sep + 2]
            dev = _keep(devtype, int(major_s), int(minor_s), decode_octal(source))
        except (ValueError, IndexError):
            continue
        if dev is None or dev in seen:
            continue
        seen.add(dev)
        mounts.append(Mount(decode_octal(dirname), devtype, dev[0], dev[1], decode_octal(source)))
    return mounts


def parse_mounts(text: str) -> List[Mount]:
    """The ``/proc/self/mounts`` fallback: device numbers from stat of the source."""
    mounts: List[Mount] = []
    seen: Set[Tuple[int, int]] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        source, dirname, devtype = (decode_octal(f) for f in fields[:3])
        dev = _block_dev_of(source)
        if dev is None or dev in seen:
            continue
        seen.add(dev)
        mounts.append(Mount(dirname, devtype, dev[0], dev[1], source))
    return mounts


def exclusion(mount: Mount, patterns: Sequence[str]) -> Optional[str]:
    """The first ``fsfreeze-exclude`` entry that matches ``mount``, or None.

    An entry starting with ``/`` is a shell glob matched against the whole
    mount point (``*`` also matches ``/``); any other entry is a filesystem
    type, matched exactly (``xfs``, ``fuse.sshfs``).
    """
    for pattern in patterns:
        if pattern.startswith("/"):
            if fnmatch.fnmatchcase(mount.dirname, pattern):
                return pattern
        elif mount.devtype == pattern:
            return pattern
    return None


#: mountinfo path -> its watch and the mount list last parsed from it (None: parse again).
_TABLES: Dict[str, Tuple[ProcWatch, Optional[List[Mount]]]] = {}
_TABLES_LOCK = threading.Lock()


def _read_mountinfo(path: str) -> List[Mount]:
    """parse_mountinfo of ``path``, parsed again only after the kernel reports a mount change."""
    if not path.startswith("/proc/"):
        return parse_mountinfo(read_file(path).decode("utf-8", "surrogateescape"))
    with _TABLES_LOCK:
        entry = _TABLES.pop(path, None)
        watch, mounts = entry if entry is not None else (ProcWatch(path), None)
        try:
            if mounts is None or watch.changed():
                mounts = parse_mountinfo(watch.read().decode("utf-8", "surrogateescape"))
        except OSError:
            watch.close()
            raise
        # The device of a btrfs mount comes from a stat() of its source, which
        # no mount event covers: such a list is parsed again at each call.
        _TABLES[path] = (watch, None if any(m.devtype == "btrfs" for m in mounts) else mounts)
        return list(mounts)


def list_mounts(mountinfo: str = "/proc/self/mountinfo", mounts: str = "/proc/self/mounts") -> List[Mount]:
    """The mount list in mount order; raises OSError when neither file is readable."""
    try:
        return _read_mountinfo(mountinfo)
    except OSError:
        return parse_mounts(read_file(mounts).decode("utf-8", "surrogateescape"))
