"""A loop-mounted ext4 image in guest-get-fsinfo / guest-get-disks (needs root).

The image is mounted through a loop device; fsinfo must list it first (the
newest mount, reverse order) with name ``loopN``, ``disk: []`` (a virtual
device without slaves) and the statvfs byte counts.  The mount and the loop
device are always removed, even when an assertion fails.
"""
from __future__ import annotations

import os
from typing import Iterator, Tuple

import pytest

from tests import loopmount
from tests.agentproc import AgentProcess

pytestmark = pytest.mark.root


@pytest.fixture
def loop_mount() -> Iterator[Tuple[str, str]]:
    """(loop device, mountpoint) of a fresh 32 MiB ext4 image."""
    with loopmount.loop_mount(32, prefix="qga-fsinfo-") as pair:
        yield pair


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
