"""Shutdown and suspend strategies (guest-shutdown, guest-suspend-*).

Paths and the program search ``PATH`` are parameters so tests can point
them at scripts; nothing here is ever run against the test machine itself.

Shutdown: when systemd runs the guest (``/run/systemd/system`` exists, the
sd_booted() test) and ``systemctl`` is found, ``systemctl poweroff|halt|
reboot`` is tried first; if it fails, qemu-ga 10.2's chain follows:
``/sbin/poweroff|halt|reboot`` with no arguments when executable (BusyBox),
else ``/sbin/shutdown -h -P|-H|-r +0 "hypervisor initiated shutdown"``.

Suspend: systemd (``systemctl status systemd-<unit>`` exit 1..3 means
supported), then pm-utils, then ``/sys/power/state`` (disk and ram only).

Failures are :class:`~qga.linux.helpers.HelperFailed` or a
:class:`SuspendError`; the command layer words them.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import List, Mapping, Optional

from qga.errors import InternalError
from qga.linux.helpers import HelperFailed, run_helper, spawn_status
from qga.log import get_logger

log = get_logger(__name__)

SHUTDOWN_MODES = {"powerdown": ("-P", "poweroff"), "halt": ("-H", "halt"), "reboot": ("-r", "reboot")}
SHUTDOWN_MESSAGE = "hypervisor initiated shutdown"


@dataclass(frozen=True)
class PowerPaths:
    """Where the power programs and files are (overridable by tests)."""

    sbin: str = "/sbin"
    systemd_runtime: str = "/run/systemd/system"
    sys_power_state: str = "/sys/power/state"
    #: PATH used to find systemctl / pm-utils; None means the agent's PATH.
    search_path: Optional[str] = None

    def env(self) -> Optional[Mapping[str, str]]:
        """Environment for helper children (None = inherit)."""
        if self.search_path is None:
            return None
        env = dict(os.environ)
        env["PATH"] = self.search_path
        return env

    def which(self, program: str) -> Optional[str]:
        """``program`` in the search path, or None."""
        return shutil.which(program, path=self.search_path)


def shutdown_commands(mode: str, paths: PowerPaths = PowerPaths()) -> List[List[str]]:
    """The command lines tried in order for ``mode`` (already validated)."""
    flag, program = SHUTDOWN_MODES[mode]
    commands: List[List[str]] = []
    systemctl = paths.which("systemctl")
    if systemctl and os.path.isdir(paths.systemd_runtime):
        commands.append([systemctl, program])
    direct = os.path.join(paths.sbin, program)
    if os.access(direct, os.X_OK):
        commands.append([direct])
    else:
        commands.append([os.path.join(paths.sbin, "shutdown"), "-h", flag, "+0", SHUTDOWN_MESSAGE])
    return commands


def shutdown(mode: str, paths: PowerPaths = PowerPaths(), timeout: Optional[float] = None) -> None:
    """Start the shutdown (``mode`` a key of SHUTDOWN_MODES); return when the
    program accepted it, raise the last program's HelperFailed when none did."""
    commands = shutdown_commands(mode, paths)
    for i, argv in enumerate(commands):
        try:
            run_helper(argv, "shutdown", env=paths.env(), timeout=timeout)
            return
        except HelperFailed as exc:
            if i == len(commands) - 1:
                raise
            log.warning("%s failed (%s); falling back to %s", " ".join(argv), exc, commands[i + 1][0])


# -- suspend -----------------------------------------------------------------

class SuspendError(InternalError):
    """A suspend that failed: ``what`` is ``"program"`` (the helper ``label``
    exited with ``status``, -1: not found), ``"write"`` (writing ``path``
    failed with ``cause``) or ``"unsupported"`` (no strategy supports the mode)."""

    def __init__(self, what: str, label: str = "", status: int = 0, path: str = "",
                 cause: Optional[OSError] = None) -> None:
        detail = {"program": f": {label} exited with {status}", "write": f": {path}: {cause}"}.get(what, "")
        super().__init__(f"suspend {what}{detail}")
        self.what = what
        self.label = label
        self.status = status
        self.path = path
        self.cause = cause


@dataclass(frozen=True)
class SuspendMode:
    """The per-mode names each strategy uses."""

    systemd_unit: str
    systemctl_verb: str
    pm_flag: str
    pm_program: str
    sysfs_word: Optional[str]


SUSPEND_MODES = {
    "disk": SuspendMode("systemd-hibernate", "hibernate", "--hibernate", "pm-hibernate", "disk"),
    "ram": SuspendMode("systemd-suspend", "suspend", "--suspend", "pm-suspend", "mem"),
    "hybrid": SuspendMode("systemd-hybrid-sleep", "hybrid-sleep", "--suspend-hybrid", "pm-suspend-hybrid", None),
}


def _run_suspend_program(argv: List[str], label: str, paths: PowerPaths) -> None:
    status = spawn_status(argv, env=paths.env())
    if status == 0:
        return
    raise SuspendError("program", label, status)


def _systemd(mode: SuspendMode, paths: PowerPaths) -> bool:
    try:
        status = spawn_status(["systemctl", "status", mode.systemd_unit], env=paths.env())
    except HelperFailed:
        return False
    # LSB status codes: 3 "not running" is the usual answer; 4 means no such unit.
    if not 0 < status < 4:
        return False
    _run_suspend_program(["systemctl", mode.systemctl_verb], f"systemctl {mode.systemctl_verb}", paths)
    return True


def _pmutils(mode: SuspendMode, paths: PowerPaths) -> bool:
    try:
        if spawn_status(["pm-is-supported", mode.pm_flag], env=paths.env()) != 0:
            return False
    except HelperFailed:
        return False
    _run_suspend_program([mode.pm_program], mode.pm_program, paths)
    return True


def _sysfs(mode: SuspendMode, paths: PowerPaths) -> bool:
    if mode.sysfs_word is None:
        return False
    try:
        with open(paths.sys_power_state, "rb") as f:
            available = f.read(31)
    except OSError:
        return False
    if mode.sysfs_word.encode() not in available:
        return False
    try:
        # Blocks until the guest resumes (or, for disk, until it is restored).
        with open(paths.sys_power_state, "wb", buffering=0) as f:
            f.write(mode.sysfs_word.encode())
    except OSError as exc:
        raise SuspendError("write", path=paths.sys_power_state, cause=exc) from None
    return True


def suspend(mode_name: str, paths: PowerPaths = PowerPaths()) -> None:
    """Try each strategy; raise the last supported strategy's error, if all fail."""
    mode = SUSPEND_MODES[mode_name]
    supported = False
    error: Optional[InternalError] = None
    for strategy in (_systemd, _pmutils, _sysfs):
        try:
            if strategy(mode, paths):
                return
        except (HelperFailed, SuspendError) as exc:
            supported = True
            error = exc
    if not supported or error is None:
        raise SuspendError("unsupported")
    raise error
