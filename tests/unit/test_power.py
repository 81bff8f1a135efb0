"""guest-shutdown / guest-suspend-* logic against stand-in programs, and the
helper runners.  Nothing here powers off, halts or suspends this machine:
every program is a script in a temporary directory and the search PATH
contains only that directory."""
from __future__ import annotations

import builtins
from pathlib import Path
from typing import List

import pytest

from qga.commands import load
from qga.commands import power as power_cmd
from qga.commands.failures import helper_error
from qga.errors import QgaError
from qga.linux import power
from qga.linux.helpers import HelperFailed, run_helper, spawn_status
from tests.unit.test_system import fake_program, make_ctx

DECLARED = {c.name: c for c in load()}


class Rig:
    """A fake /sbin, PATH and /sys/power/state; records every program run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sbin = root / "sbin"
        self.bin = root / "bin"
        self.runtime = root / "run-systemd-system"
        self.state = root / "power-state"
        self.log = root / "calls"
        for d in (self.sbin, self.bin):
            d.mkdir()
        self.log.write_text("")

    def program(self, where: Path, name: str, body: str = "exit 0") -> None:
        fake_program(where / name, f'echo "{name} $*" >> {self.log}\n{body}')

    def calls(self) -> List[str]:
        return self.log.read_text().splitlines()

    def paths(self) -> power.PowerPaths:
        return power.PowerPaths(sbin=str(self.sbin), systemd_runtime=str(self.runtime),
                                sys_power_state=str(self.state), search_path=str(self.bin))

    def command(self, monkeypatch: pytest.MonkeyPatch, name: str, **args: str) -> None:
        """Run the command ``name`` (guest-shutdown, guest-suspend-*) against this rig."""
        monkeypatch.setattr(power_cmd, "PATHS", self.paths())
        DECLARED[name].func(make_ctx(self.root / "state"), **args)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


# -- helper runners ---------------------------------------------------------------

def helper_text(argv: List[str], **kwargs: object) -> str:
    """The wire text of a failing run_helper (HelperFailed worded by the command layer)."""
    with pytest.raises(HelperFailed) as err:
        run_helper(argv, "act", **kwargs)  # type: ignore[arg-type]
    return helper_error(err.value).desc


def test_run_helper_texts(tmp_path: Path) -> None:
    run_helper(["/bin/true"], "test")
    assert helper_text(["/bin/sh", "-c", "exit 4"]) == "child process has failed to act: exit status 4"
    assert helper_text(["/bin/sh", "-c", "echo out; echo err >&2; exit 1"]) == \
        "child process has failed to act: out\nerr\n"  # merged, in order
    assert helper_text(["/bin/sh", "-c", "echo bye; kill -9 $$"]) == "child process has terminated abnormally: bye\n"
    assert helper_text(["/bin/sh", "-c", "kill -9 $$"]) == "child process has terminated abnormally"
    assert helper_text([str(tmp_path / "nope")]) == \
        f"child process has failed to act: failed to exec '{tmp_path / 'nope'}': No such file or directory\n"


def test_run_helper_stdin_session_and_timeout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_helper(["/bin/sh", "-c", f"cat > {out}; ps -o sid= -p $$ >> {out}; ps -o pid= -p $$ >> {out}"],
               "act", input=b"user:secret\n")
    data, sid, pid = out.read_text().rsplit("\n", 3)[0:3]
    assert data == "user:secret" and sid.strip() == pid.strip()  # setsid(): own session
    assert helper_text(["/bin/sh", "-c", "sleep 30"], timeout=0.3) == \
        "child process has failed to act: timed out after 0.3 seconds"


def test_spawn_status(tmp_path: Path) -> None:
    assert spawn_status(["/bin/sh", "-c", "exit 3"]) == 3
    assert spawn_status(["no-such-program-qga"], env={"PATH": str(tmp_path)}) == -1
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(HelperFailed) as err:
        spawn_status([str(plain)])
    assert helper_error(err.value).desc == \
        f"failed to create child process, error 'Failed to execute child process “{plain}” (Permission denied)'"


# -- shutdown -----------------------------------------------------------------------

@pytest.mark.parametrize("mode, flag, program", [
    ("powerdown", "-P", "poweroff"), ("halt", "-H", "halt"), ("reboot", "-r", "reboot")])
def test_shutdown_chain_without_systemd(rig: Rig, mode: str, flag: str, program: str) -> None:
    rig.program(rig.sbin, "shutdown")
    power.shutdown(mode, rig.paths())
    assert rig.calls() == [f"shutdown -h {flag} +0 hypervisor initiated shutdown"]
    rig.log.write_text("")
    rig.program(rig.sbin, program)  # 10.2: the BusyBox-style program, no arguments
    power.shutdown(mode, rig.paths())
    assert rig.calls() == [f"{program} "]


def test_shutdown_prefers_systemctl_under_systemd(rig: Rig) -> None:
    rig.runtime.mkdir()
    rig.program(rig.bin, "systemctl")
    rig.program(rig.sbin, "reboot")
    power.shutdown("reboot", rig.paths())
    assert rig.calls() == ["systemctl reboot"]


def test_shutdown_systemctl_failure_falls_back(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.runtime.mkdir()
    rig.program(rig.bin, "systemctl", "echo no bus; exit 1")
    rig.program(rig.sbin, "shutdown", "echo busy; exit 2")
    with pytest.raises(QgaError) as err:
        rig.command(monkeypatch, "guest-shutdown", mode="powerdown")
    assert rig.calls() == ["systemctl poweroff", "shutdown -h -P +0 hypervisor initiated shutdown"]
    assert err.value.desc == "child process has failed to shutdown: busy\n"


def test_shutdown_missing_programs(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HelperFailed):
        power.shutdown("halt", rig.paths())
    with pytest.raises(QgaError) as err:
        rig.command(monkeypatch, "guest-shutdown", mode="halt")
    assert err.value.desc == ("child process has failed to shutdown: "
                              f"failed to exec '{rig.sbin}/shutdown': No such file or directory\n")


def test_shutdown_handler(tmp_path: Path, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(power_cmd, "PATHS", rig.paths())
    rig.program(rig.sbin, "poweroff")
    assert power_cmd.shutdown(make_ctx(tmp_path)) is None  # default mode powerdown
    assert rig.calls() == ["poweroff "]
    with pytest.raises(QgaError) as err:
        power_cmd.shutdown(make_ctx(tmp_path), mode="sleep")
    assert err.value.desc == "mode is invalid (valid values are: halt|powerdown|reboot"
    assert rig.calls() == ["poweroff "]


# -- suspend --------------------------------------------------------------------------

def test_suspend_nothing_supported(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("disk", "ram", "hybrid"):
        with pytest.raises(power.SuspendError) as exc:
            power.suspend(mode, rig.paths())
        assert exc.value.what == "unsupported"
        with pytest.raises(QgaError, match="^the requested suspend mode is not supported by the guest$"):
            rig.command(monkeypatch, f"guest-suspend-{mode}")


@pytest.mark.parametrize("status", [1, 3])
def test_suspend_systemd(rig: Rig, status: int) -> None:
    rig.program(rig.bin, "systemctl", f'[ "$1" = status ] && exit {status}; exit 0')
    power.suspend("hybrid", rig.paths())
    assert rig.calls() == ["systemctl status systemd-hybrid-sleep", "systemctl hybrid-sleep"]


def test_suspend_systemd_unit_missing_goes_to_pmutils(rig: Rig) -> None:
    rig.program(rig.bin, "systemctl", '[ "$1" = status ] && exit 4; exit 0')
    rig.program(rig.bin, "pm-is-supported")
    rig.program(rig.bin, "pm-hibernate")
    power.suspend("disk", rig.paths())
    assert rig.calls() == ["systemctl status systemd-hibernate", "pm-is-supported --hibernate", "pm-hibernate "]


def test_suspend_systemd_failure_reported(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.program(rig.bin, "systemctl", '[ "$1" = status ] && exit 3; exit 5')
    with pytest.raises(QgaError) as err:
        rig.command(monkeypatch, "guest-suspend-ram")
    assert err.value.desc == "the helper program 'systemctl suspend' returned an unexpected exit status code (5)"


def test_suspend_pmutils_program_missing(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.program(rig.bin, "pm-is-supported")
    with pytest.raises(QgaError, match="^the helper program 'pm-suspend-hybrid' was not found$"):
        rig.command(monkeypatch, "guest-suspend-hybrid")


def test_suspend_sysfs(rig: Rig) -> None:
    rig.state.write_text("freeze mem disk\n")
    power.suspend("ram", rig.paths())
    assert rig.state.read_text() == "mem"
    rig.state.write_text("freeze mem\n")
    for mode in ("disk", "hybrid"):  # no sysfs path for hybrid
        with pytest.raises(power.SuspendError) as exc:
            power.suspend(mode, rig.paths())
        assert exc.value.what == "unsupported"


def test_suspend_sysfs_write_failure(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root ignores file modes, so the failing write is simulated."""
    rig.state.write_text("mem disk")
    paths = rig.paths()
    real_open = builtins.open

    def read_only_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) == paths.sys_power_state and "w" in mode:
            raise PermissionError(13, "Permission denied")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    with pytest.raises(QgaError) as err:
        rig.command(monkeypatch, "guest-suspend-disk")
    assert err.value.desc == f"suspend: cannot write to '{rig.state}': Permission denied"


def test_suspend_handlers_declared() -> None:
    for name in ("guest-shutdown", "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"):
        cmd = DECLARED[name]
        assert not cmd.success_response and cmd.group == "system-control" and cmd.audit


def test_suspend_handler(tmp_path: Path, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(power_cmd, "PATHS", rig.paths())
    rig.state.write_text("disk")
    assert power_cmd.suspend_disk(make_ctx(tmp_path)) is None
    assert rig.state.read_text() == "disk"


def test_helper_timeout_follows_command_timeout() -> None:
    from qga.config import Config
    from qga.linux.helpers import helper_timeout
    assert helper_timeout(Config()) == 60.0
    assert helper_timeout(Config(command_timeout=0)) is None
