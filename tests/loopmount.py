"""A throwaway ext4 filesystem on a loop device, for root tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from typing import Iterator, Tuple


@contextmanager
def loop_mount(size_mib: int = 32, prefix: str = "qga-loop-") -> Iterator[Tuple[str, str]]:
    """(loop device, mountpoint) of a fresh ext4 image.

    Always torn down, even when the test fails: thawed (a failed freeze test
    must not leave it frozen), unmounted, detached, removed.
    """
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            raise AssertionError(f"{tool} is needed for this test (tests/run-all.sh installs it)")
    work = tempfile.mkdtemp(prefix=prefix)
    image, mnt, dev = os.path.join(work, "img"), os.path.join(work, "mnt"), ""
    os.mkdir(mnt)
    try:
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        dev = subprocess.run(["losetup", "--find", "--show", image], check=True,
                             capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", dev, mnt], check=True, capture_output=True)
        yield dev, mnt
    finally:
        subprocess.run(["fsfreeze", "-u", mnt], capture_output=True)
        subprocess.run(["umount", mnt], capture_output=True)
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
