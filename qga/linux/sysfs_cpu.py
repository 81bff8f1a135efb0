"""vCPU online state in sysfs (guest-get-vcpus / guest-set-vcpus).

Everything takes the cpu directory as a parameter so tests can run against a
copied tree.  Failures are :class:`~qga.linux.sysfs.StepError` (``listdir`` of
that directory, ``opendir`` of ``cpuN/``, ``open``/``pread``/``pwrite`` of its
``online``) or :class:`CannotOffline`; the command layer words them.
"""
from __future__ import annotations

import errno
import os
import re
import threading
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

from qga.errors import InternalError
from qga.linux.sysfs import StepError, open_dir

DEFAULT_DIR = "/sys/devices/system/cpu"
# sscanf("cpu%ld"): "cpu", optional blanks and sign, digits; the rest is ignored.
_CPU_NAME = re.compile(r"cpu[ \t\n\v\f\r]*([+-]?\d+)")


class CannotOffline(InternalError):
    """A request to offline a vCPU that has no ``online`` file (typically cpu0)."""

    def __init__(self, logical_id: int) -> None:
        super().__init__(f"cpu{logical_id} has no online file")
        self.logical_id = logical_id


def _transfer(sysfs_cpu: str, vcpu: Dict[str, Any], read: bool) -> None:
    """Read (``read``) or apply the state of one vCPU, as qemu-ga's transfer_vcpu."""
    logical_id = vcpu["logical-id"]
    dirpath = f"{sysfs_cpu}/cpu{logical_id}/"
    dirfd = open_dir(dirpath)
    try:
        try:
            fd = os.open("online", (os.O_RDONLY if read else os.O_RDWR) | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise StepError("open", dirpath, "online", exc) from None
            # No "online" file (typically cpu0): always online, cannot go offline.
            if read:
                vcpu["online"] = True
                vcpu["can-offline"] = False
            elif not vcpu["online"]:
                raise CannotOffline(logical_id) from None
            return
        _transfer_online(fd, dirpath, vcpu, read)
    finally:
        os.close(dirfd)


def _online_now(fd: int, dirpath: str) -> bool:
    """The state in the open ``online`` file ``fd``; StepError ``pread`` when it cannot be read."""
    try:
        status = os.pread(fd, 1, 0)
    except OSError as exc:
        raise StepError("pread", dirpath, "online", exc) from None
    if not status:
        raise StepError("pread", dirpath, "online")
    return status != b"0"


def _transfer_online(fd: int, dirpath: str, vcpu: Dict[str, Any], read: bool) -> None:
    """The part of :func:`_transfer` on the open ``online`` file ``fd``, which it closes."""
    try:
        online_now = _online_now(fd, dirpath)
        if read:
            vcpu["online"] = online_now
            vcpu["can-offline"] = True
        elif vcpu["online"] != online_now:
            try:
                os.pwrite(fd, b"1" if vcpu["online"] else b"0", 0)
            except OSError as exc:
                raise StepError("pwrite", dirpath, "online", exc) from None
    finally:
        os.close(fd)


class _Kept:
    """A sysfs cpu directory and its cpus' ``online`` files, kept open between calls.

    A sysfs file is made afresh by each read from offset 0, and once its cpu
    is gone a read fails (ENODEV) instead of showing old contents: such a
    descriptor is closed and the file opened again; one whose cpu is no
    longer listed is closed.  Only under /sys/ (a copied tree could be
    renamed over, leaving a kept descriptor on the old file).
    """

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        #: logical id -> descriptor of its cpuN/online; at most KEEP_ONLINE.
        self.online: Dict[int, int] = {}
        #: Logical ids whose cpuN had no online file when last read (typically 0):
        #: they are asked with access(), which fails without an exception.
        #: Only a hint of which call to make; bounded by the cpus there can be.
        self.absent: Set[int] = set()
        #: Held across one listing (a listing rewinds the directory descriptor).
        self.lock = threading.Lock()

    def drop(self, logical_id: int) -> None:
        """Close the kept ``online`` file of ``logical_id``."""
        os.close(self.online.pop(logical_id))


#: The most cpuN/online files kept open per directory (the others are opened per call).
KEEP_ONLINE = 64
_KEPT: Dict[str, _Kept] = {}
_KEPT_LOCK = threading.Lock()  # only while an entry is looked up or added


def read_vcpus(sysfs_cpu: str = DEFAULT_DIR) -> List[Dict[str, Any]]:
    """GuestLogicalProcessor list in directory order (unsorted, as qemu-ga)."""
    if not sysfs_cpu.startswith("/sys/"):
        return _read_vcpus(sysfs_cpu, None)
    with _KEPT_LOCK:
        kept = _KEPT.get(sysfs_cpu)
        if kept is None:
            try:
                kept = _KEPT[sysfs_cpu] = _Kept(sysfs_cpu)
            except OSError:  # worded by the uncached path
                return _read_vcpus(sysfs_cpu, None)
    with kept.lock:
        return _read_vcpus(sysfs_cpu, kept)


def _read_vcpus(sysfs_cpu: str, kept: Optional[_Kept]) -> List[Dict[str, Any]]:
    if kept is not None:
        cpu_fd = kept.fd
    else:
        try:
            cpu_fd = os.open(sysfs_cpu, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StepError("listdir", sysfs_cpu, cause=exc) from None
    result: List[Dict[str, Any]] = []
    held = 0  # kept online files of cpus listed this time
    try:
        try:
            names = os.listdir(cpu_fd)
        except OSError as exc:
            raise StepError("listdir", sysfs_cpu, cause=exc) from None
        for name in names:
            match = _CPU_NAME.match(name) if name.startswith("cpu") else None
            if not match:
                continue
            # Schema member order: logical-id, online, can-offline.
            logical_id = int(match.group(1))
            vcpu: Dict[str, Any] = {"logical-id": logical_id, "online": True}
            result.append(vcpu)
            if kept is not None and logical_id in kept.online:
                try:
                    vcpu["online"] = _online_now(kept.online[logical_id], "")
                    vcpu["can-offline"] = True
                    held += 1
                    continue
                except StepError:  # its cpu went away: a fresh open tells what is there now
                    kept.drop(logical_id)
            if kept is not None and logical_id in kept.absent and name == f"cpu{logical_id}":
                # In sysfs only a missing file fails F_OK (no permission applies).
                if not os.access(f"cpu{logical_id}/online", os.F_OK, dir_fd=cpu_fd):
                    vcpu["can-offline"] = False
                    continue
                kept.absent.discard(logical_id)
            # One open below the listed directory where qemu-ga opens cpuN/, then online in it.
            try:
                fd = os.open(f"cpu{logical_id}/online", os.O_RDONLY | os.O_CLOEXEC, dir_fd=cpu_fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT and name == f"cpu{logical_id}":
                    # No "online" file in a directory just listed (typically cpu0).
                    # Had it gone since (CPU unplug), qemu-ga could answer the same:
                    # its openat() of "online" in the opened directory fails alike.
                    vcpu["can-offline"] = False
                    if kept is not None:
                        kept.absent.add(logical_id)
                else:  # qemu-ga's two steps tell which failed, and how
                    _transfer(sysfs_cpu, vcpu, read=True)
                continue
            if kept is None or len(kept.online) >= KEEP_ONLINE:
                _transfer_online(fd, f"{sysfs_cpu}/cpu{logical_id}/", vcpu, read=True)
                continue
            kept.online[logical_id] = fd
            held += 1
            vcpu["online"] = _online_now(fd, f"{sysfs_cpu}/cpu{logical_id}/")
            vcpu["can-offline"] = True
        if kept is not None and len(kept.online) > held:
            for gone in set(kept.online) - {v["logical-id"] for v in result}:
                kept.drop(gone)
    finally:
        if kept is None:
            os.close(cpu_fd)
    return result


def set_vcpus(vcpus: Sequence[Mapping[str, Any]], sysfs_cpu: str = DEFAULT_DIR) -> int:
    """Apply requests in order, stop at the first failure; the count processed.

    The error is raised only when the very first entry fails; after that the
    partial count is returned (the host resends the rest), as in qemu-ga.
    """
    processed = 0
    for request in vcpus:
        try:
            _transfer(sysfs_cpu, dict(request), read=False)
        except (StepError, CannotOffline):
            if processed == 0:
                raise
            break
        processed += 1
    return processed
