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
from typing import Any, Dict, List, Mapping, Sequence

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


def _transfer_online(fd: int, dirpath: str, vcpu: Dict[str, Any], read: bool) -> None:
    """The part of :func:`_transfer` on the open ``online`` file ``fd``, which it closes."""
    try:
        try:
            status = os.pread(fd, 1, 0)
        except OSError as exc:
            raise StepError("pread", dirpath, "online", exc) from None
        if not status:
            raise StepError("pread", dirpath, "online")
        online_now = status != b"0"
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


def read_vcpus(sysfs_cpu: str = DEFAULT_DIR) -> List[Dict[str, Any]]:
    """GuestLogicalProcessor list in directory order (unsorted, as qemu-ga)."""
    try:
        cpu_fd = os.open(sysfs_cpu, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StepError("listdir", sysfs_cpu, cause=exc) from None
    result: List[Dict[str, Any]] = []
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
            # One open below the listed directory where qemu-ga opens cpuN/, then online in it.
            try:
                fd = os.open(f"cpu{logical_id}/online", os.O_RDONLY | os.O_CLOEXEC, dir_fd=cpu_fd)
            except OSError as exc:
                if exc.errno == errno.ENOENT and name == f"cpu{logical_id}":
                    # No "online" file in a directory just listed (typically cpu0).
                    # Had it gone since (CPU unplug), qemu-ga could answer the same:
                    # its openat() of "online" in the opened directory fails alike.
                    vcpu["can-offline"] = False
                else:  # qemu-ga's two steps tell which failed, and how
                    _transfer(sysfs_cpu, vcpu, read=True)
            else:
                _transfer_online(fd, f"{sysfs_cpu}/cpu{logical_id}/", vcpu, read=True)
            result.append(vcpu)
    finally:
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
