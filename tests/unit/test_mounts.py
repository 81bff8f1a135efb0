"""The mount list parser (qga/linux/mounts.py): what freeze, thaw, fstrim and fsinfo work on."""
from __future__ import annotations

from qga.linux.mounts import Mount, parse_mountinfo

# A loop-mounted ext4 at /mnt/a, bind-mounted at /mnt/b and (a subdirectory) at /srv/c,
# between a root filesystem, pseudo filesystems, NFS and a mount point with a space.
MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs udev rw,size=1000k
40 22 7:3 / /mnt/a rw,relatime shared:20 - ext4 /dev/loop3 rw
41 22 0:45 / /tmp rw - tmpfs tmpfs rw
42 22 7:3 / /mnt/b rw,relatime shared:20 - ext4 /dev/loop3 rw
43 22 7:3 /sub /srv/c rw,relatime shared:20 - ext4 /dev/loop3 rw
44 22 0:50 / /net rw - nfs4 server:/export rw,vers=4.2
45 22 8:2 / /mnt/with\\040space rw - xfs /dev/sda2 rw
"""


def test_bind_mounts_are_listed_once_first_mount_wins() -> None:
    assert parse_mountinfo(MOUNTINFO) == [
        Mount("/", "ext4", 8, 1, "/dev/sda1"),
        Mount("/mnt/a", "ext4", 7, 3, "/dev/loop3"),  # /mnt/b and /srv/c are the same filesystem
        Mount("/mnt/with space", "xfs", 8, 2, "/dev/sda2"),
    ]


def test_malformed_lines_are_skipped() -> None:
    text = "garbage\n50 22 8:x / /bad rw - ext4 /dev/sdz rw\n51 22 8:3 / /short rw\n" + MOUNTINFO
    assert [m.dirname for m in parse_mountinfo(text)] == ["/", "/mnt/a", "/mnt/with space"]
