"""guest-shutdown and guest-suspend-{disk,ram,hybrid}: no reply on success."""
from __future__ import annotations

from typing import Optional

from qga.context import Context
from qga.linux import on_linux, power
from qga.linux.helpers import helper_timeout
from qga.command import command

#: Overridable by tests: where the programs and /sys/power/state are.
PATHS = power.PowerPaths()


@command("guest-shutdown", order=7, group="system-control", args={"*mode": "str"},
         success_response=False, audit=("mode",))
def shutdown(ctx: Context, mode: Optional[str] = None) -> None:
    """Power down (default), halt or reboot the guest."""
    mode = "powerdown" if mode is None else mode
    ctx.audit("guest-shutdown called", mode=mode)
    power.shutdown(mode, PATHS, timeout=helper_timeout(ctx.config))


def _suspend(ctx: Context, mode: str) -> None:
    ctx.audit(f"guest-suspend-{mode} called")
    power.suspend(mode, PATHS)


@command("guest-suspend-disk", order=19, group="system-control", success_response=False, audit=True,
         available=on_linux)
def suspend_disk(ctx: Context) -> None:
    """Hibernate (suspend to disk)."""
    _suspend(ctx, "disk")


@command("guest-suspend-ram", order=20, group="system-control", success_response=False, audit=True,
         available=on_linux)
def suspend_ram(ctx: Context) -> None:
    """Suspend to RAM."""
    _suspend(ctx, "ram")


@command("guest-suspend-hybrid", order=21, group="system-control", success_response=False, audit=True,
         available=on_linux)
def suspend_hybrid(ctx: Context) -> None:
    """Hybrid sleep (systemd or pm-utils only)."""
    _suspend(ctx, "hybrid")
