"""The Linux side: /proc, /sys, netlink, ioctls, the helper programs."""
from __future__ import annotations

import sys


def on_linux() -> bool:
    """The gate of the commands that read Linux interfaces (their ``available``)."""
    return sys.platform.startswith("linux")
