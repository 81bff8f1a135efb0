"""A loop-mounted ext4 image in guest-get-fsinfo / guest-get-disks (needs root).

The image is mounted through a loop device; fsinfo must list it first (the
newest mount, reverse order) with name ``loopN``, ``disk: []`` (a virtual
device without slaves) and the statvfs byte counts.  The mount and the loop
device are always removed, even when an assertion fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
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


#: Run in a mount namespace of its own (no other mount on the machine can
#: interfere): the mount list is parsed once, then again only after a mount
#: change, which it then shows.
_MOUNT_EVENTS = """
import subprocess, sys
from qga.linux import mounts
parses = []
real = mounts.parse_mountinfo
def counting(text):
    parses.append(text)
    return real(text)
mounts.parse_mountinfo = counting
dev, mnt = sys.argv[1:]
def names():
    return [m.dirname for m in mounts.list_mounts()]
first = names()
assert names() == first and len(parses) == 1, "unchanged, yet parsed again"
subprocess.run(["mount", dev, mnt], check=True)
assert names() == first + [mnt] and len(parses) == 2, "the mount was not seen"
assert names() == first + [mnt] and len(parses) == 2, "unchanged, yet parsed again"
subprocess.run(["umount", mnt], check=True)
assert names() == first and len(parses) == 3, "the unmount was not seen"
print("ok")
"""


def test_the_mount_list_is_parsed_again_after_each_mount_change(tmp_path: Path) -> None:
    with loopmount.loop_device(32, prefix="qga-mountlist-", mkfs=True) as (dev, _work):
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        repo = Path(__file__).resolve().parents[2]
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                               _MOUNT_EVENTS, dev, str(mnt)], cwd=repo, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(repo)), timeout=60)
        assert proc.stdout.strip() == "ok", proc.stderr
