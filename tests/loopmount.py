"""Throwaway loop devices (and ext4 filesystems on them), for root tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Iterator, Tuple


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise AssertionError(f"{tool} is needed for this test (tests/run-all.sh installs it)")


@contextmanager
def loop_device(size_mib: int = 32, prefix: str = "qga-loop-", mkfs: bool = False) -> Iterator[Tuple[str, str]]:
    """(loop device, work directory) of a fresh image (ext4 when ``mkfs``); always detached and removed."""
    _need("losetup", *(["mkfs.ext4"] if mkfs else []))
    work = tempfile.mkdtemp(prefix=prefix)
    image, dev = os.path.join(work, "img"), ""
    try:
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        if mkfs:
            subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        dev = subprocess.run(["losetup", "--find", "--show", image], check=True,
                             capture_output=True, text=True).stdout.strip()
        yield dev, work
    finally:
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def loop_mount(size_mib: int = 32, prefix: str = "qga-loop-") -> Iterator[Tuple[str, str]]:
    """(loop device, mountpoint) of a fresh ext4 image.

    Always torn down, even when the test fails: thawed (a failed freeze test
    must not leave it frozen), unmounted, detached, removed.
    """
    _need("mount", "umount")
    with loop_device(size_mib, prefix, mkfs=True) as (dev, work):
        mnt = os.path.join(work, "mnt")
        os.mkdir(mnt)
        try:
            subprocess.run(["mount", dev, mnt], check=True, capture_output=True)
            yield dev, mnt
        finally:
            subprocess.run(["fsfreeze", "-u", mnt], capture_output=True)
            subprocess.run(["umount", mnt], capture_output=True)
