"""A loop-mounted ext4 image in guest-get-fsinfo / guest-get-disks (needs root).

The image is mounted through a loop device; fsinfo must list it first (the
newest mount, reverse order) with name ``loopN``, ``disk: []`` (a virtual
device without slaves) and the statvfs byte counts.  The mount and the loop
device are always removed, even when an assertion fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Iterator, Tuple

import pytest

from tests.agentproc import AgentProcess

pytestmark = pytest.mark.root


@pytest.fixture
def loop_mount() -> Iterator[Tuple[str, str]]:
    """(loop device, mountpoint) of a fresh 32 MiB ext4 image."""
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed for this test")
    work = tempfile.mkdtemp(prefix="qga-fsinfo-")
    image, mnt = os.path.join(work, "img"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    dev = ""
    try:
        with open(image, "wb") as f:
            f.truncate(32 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True)
        dev = subprocess.run(["losetup", "--find", "--show", image], check=True,
                             capture_output=True, text=True).stdout.strip()
        subprocess.run(["mount", dev, mnt], check=True, capture_output=True)
        yield dev, mnt
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_loop_ext4_in_fsinfo_and_disks(agent: AgentProcess, loop_mount: Tuple[str, str]) -> None:
    dev, mnt = loop_mount
    conn = agent.connect()
    fsinfo = conn.cmd("guest-get-fsinfo")
    entry = next(fs for fs in fsinfo if fs["mountpoint"] == mnt)
    assert fsinfo.index(entry) == 0  # newest mount first
    st = os.statvfs(mnt)
    used = st.f_blocks - st.f_bfree
    assert entry == {"name": os.path.basename(dev), "total-bytes": (used + st.f_bavail) * st.f_frsize,
                     "total-bytes-privileged": st.f_blocks * st.f_frsize, "mountpoint": mnt,
                     "disk": [], "used-bytes": used * st.f_frsize, "type": "ext4"}
    disks = conn.cmd("guest-get-disks")
    loop = next(d for d in disks if d["name"] == dev)
    assert loop == {"name": dev, "partition": False, "dependencies": []}  # virtual: no address
