"""guest-shutdown and guest-suspend-{disk,ram,hybrid}: no reply on success."""
from __future__ import annotations

from typing import Optional

from qga.commands.failures import helper_error
from qga.context import Context
from qga.errors import QgaError, strerror
from qga.linux import on_linux, power
from qga.linux.helpers import HelperFailed, helper_timeout
from qga.command import command

#: Overridable by tests: where the programs and /sys/power/state are.
PATHS = power.PowerPaths()


@command("guest-shutdown", order=7, group="system-control", args={"*mode": "str"},
         success_response=False, audit=("mode",))
def shutdown(ctx: Context, mode: Optional[str] = None) -> None:
    """Power down (default), halt or reboot the guest."""
    mode = "powerdown" if mode is None else mode
    ctx.audit("guest-shutdown called", mode=mode)
    if mode not in power.SHUTDOWN_MODES:  # qemu-ga's text, missing parenthesis included
        raise QgaError("mode is invalid (valid values are: halt|powerdown|reboot")
    try:
        power.shutdown(mode, PATHS, timeout=helper_timeout(ctx.config))
    except HelperFailed as exc:
        raise helper_error(exc) from None


def suspend_error(exc: power.SuspendError) -> QgaError:
    """qemu-ga's text for a suspend that failed."""
    if exc.what == "unsupported":
        return QgaError("the requested suspend mode is not supported by the guest")
    if exc.what == "write":
        code = (exc.cause.errno or 0) if exc.cause else 0
        return QgaError(f"suspend: cannot write to '{exc.path}': {strerror(code)}")
    if exc.status == -1:
        return QgaError(f"the helper program '{exc.label}' was not found")
    return QgaError(f"the helper program '{exc.label}' returned an unexpected exit status code ({exc.status})")


def _suspend(ctx: Context, mode: str) -> None:
    ctx.audit(f"guest-suspend-{mode} called")
    try:
        power.suspend(mode, PATHS)
    except HelperFailed as exc:
        raise helper_error(exc) from None
    except power.SuspendError as exc:
        raise suspend_error(exc) from None


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
