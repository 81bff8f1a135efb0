"""Security promises: command groups, -D policy, state files, SELinux hints, --self-test (issue 8)."""
from __future__ import annotations

import errno
import functools
import io
import os
import stat
import subprocess
import sys
from typing import List

import pytest

from qga import errors
from qga.config import Config
from qga.commands import load
from qga.registry import Registry
from qga.selftest import SelfTest, run_self_test
from tests.agentproc import REPO, start

#: The security promise, written out (not read back from the registry under test):
#: the group of every command.  A new command must be added here, in its group.
GROUPS = {
    "protocol": {"guest-info", "guest-ping", "guest-sync", "guest-sync-delimited"},
    "info": {"guest-get-cpustats", "guest-get-disks", "guest-get-diskstats", "guest-get-fsinfo",
             "guest-get-host-name", "guest-get-load", "guest-get-memory-block-info",
             "guest-get-memory-blocks", "guest-get-osinfo", "guest-get-time", "guest-get-timezone",
             "guest-get-users", "guest-get-vcpus", "guest-network-get-interfaces", "guest-network-get-route"},
    "unrestricted": {"guest-exec", "guest-exec-status", "guest-file-close", "guest-file-flush",
                     "guest-file-open", "guest-file-read", "guest-file-seek", "guest-file-write",
                     "x-guest-exec-kill"},
    "user-auth": {"guest-set-user-password", "guest-ssh-add-authorized-keys",
                  "guest-ssh-get-authorized-keys", "guest-ssh-remove-authorized-keys"},
    "system-control": {"guest-set-memory-blocks", "guest-set-time", "guest-set-vcpus", "guest-shutdown",
                       "guest-suspend-disk", "guest-suspend-hybrid", "guest-suspend-ram"},
    "fsfreeze": {"guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-status",
                 "guest-fsfreeze-thaw", "guest-fstrim"},
}
UNRESTRICTED = sorted(GROUPS["unrestricted"] - {"x-guest-exec-kill"})  # a stock agent's


def run_cli(*argv: str, env: dict = None) -> subprocess.CompletedProcess:
    """``python -m qga ARGV`` with no config file."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), QGA_CONF="/nonexistent")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "qga", *argv], capture_output=True, text=True,
                          env=full_env, timeout=60)


# -- command groups ------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["option", "config"])
def test_block_group_disables_whole_group(agent_dir: str, how: str) -> None:
    if how == "option":
        extra = ["--block-groups", "unrestricted"]
    else:
        conf = os.path.join(agent_dir, "qga.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write("[general]\nblock-groups=unrestricted\n")
        extra = ["-c", conf]
    proc = start("ours", extra=extra, tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        for name in ("guest-file-open", "guest-exec"):
            reply = conn.request({"execute": name, "arguments": {"path": "/etc/hostname"}})
            assert reply == {"error": {"class": "CommandNotFound",
                                       "desc": f"Command {name} has been disabled: the command is not allowed"}}
        info = {c["name"]: c["enabled"] for c in conn.cmd("guest-info")["supported_commands"]}
        assert UNRESTRICTED and all(info[n] is False for n in UNRESTRICTED)
        assert all(enabled for n, enabled in info.items() if n not in UNRESTRICTED)
        assert conn.cmd("guest-ping") == {}
    finally:
        assert proc.stop() == 0, proc.log()


def test_protocol_group_cannot_be_disabled(agent_dir: str) -> None:
    proc = start("ours", extra=["--block-groups", "protocol,info"], tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        assert conn.cmd("guest-ping") == {}
        assert conn.cmd("guest-sync", id=5) == 5
        info = {c["name"]: c["enabled"] for c in conn.cmd("guest-info")["supported_commands"]}
        assert info["guest-info"] and info["guest-sync-delimited"] and info["guest-ping"]
        assert info["guest-get-osinfo"] is False
        assert conn.request({"execute": "guest-get-osinfo"})["error"]["class"] == "CommandNotFound"
    finally:
        assert proc.stop() == 0, proc.log()


def test_new_command_joins_a_group() -> None:
    """Every registered command is in the table above, so a later addition cannot escape a block."""
    registry = Registry(load(), extensions=True)
    assert {n: c.group for n, c in registry.commands.items()} == \
           {n: group for group, names in GROUPS.items() for n in names}
    for group, names in GROUPS.items():
        registry.configure(None, [], [group])
        assert set(registry.policy_disabled()) == (set() if group == "protocol" else names), group


def test_dump_conf_shows_policy_and_disabled_commands() -> None:
    res = run_cli("-m", "unix-listen", "-p", "/s", "--block-groups", "unrestricted", "-b",
                  "guest-get-time", "-D")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "block-groups=unrestricted" in lines
    (disabled,) = [line for line in lines if line.startswith("# disabled-commands=")]
    assert set(disabled.split("=", 1)[1].split(";")) == set(UNRESTRICTED) | {"guest-get-time"}
    # Without block-groups the comment would say nothing qemu-ga's own keys do not: none.
    plain = run_cli("-m", "unix-listen", "-p", "/s", "-b", "guest-get-time", "-D")
    assert plain.returncode == 0 and not [ln for ln in plain.stdout.splitlines() if ln.startswith("#")]


def test_unknown_group_is_a_config_error() -> None:
    res = run_cli("-m", "unix-listen", "-p", "/s", "--block-groups", "bogus")
    assert res.returncode == 1
    assert "unknown command group 'bogus' in block-groups" in res.stderr
    assert "Traceback" not in res.stderr


# -- state files ---------------------------------------------------------------------------------

def test_state_and_pid_files_private(agent_dir: str) -> None:
    pidfile = os.path.join(agent_dir, "qga.pid")
    proc = start("ours", extra=["-f", pidfile], tmpdir=agent_dir)
    try:
        proc.connect().sync()
        for path in (pidfile, os.path.join(agent_dir, "qga.state")):
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode == 0o600, f"{path}: {mode:o}"
    finally:
        assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("name", ["qga.state.tmp", "pid"])
def test_symlinks_refused(agent_dir: str, name: str) -> None:
    victim = os.path.join(agent_dir, "victim")
    os.symlink(victim, os.path.join(agent_dir, name))
    res = run_cli("-m", "unix-listen", "-p", os.path.join(agent_dir, "sock"), "-t", agent_dir,
                  "-f", os.path.join(agent_dir, "pid"))
    assert res.returncode == 1
    assert "Too many levels of symbolic links" in res.stderr, res.stderr
    assert not os.path.exists(victim), "the agent wrote through a symlink"


@pytest.mark.root
def test_missing_state_dir_created_private_and_foreign_symlink_refused(tmp_path) -> None:
    from qga.state import StateDir, StateError

    state = StateDir(str(tmp_path / "new"))
    state.load()
    assert stat.S_IMODE(os.lstat(tmp_path / "new").st_mode) == 0o700
    assert (tmp_path / "new" / "qga.state").read_text() == "[global]\nfd_counter=1000\n"
    os.mkdir(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link")
    os.lchown(tmp_path / "link", 65534, 65534)  # planted by an unprivileged user
    with pytest.raises(StateError, match="is a symbolic link owned by uid 65534"):
        StateDir(str(tmp_path / "link")).load()
    assert not (tmp_path / "elsewhere" / "qga.state").exists()
    os.lchown(tmp_path / "link", 0, 0)  # root's own links (like /var/run -> /run) are fine
    StateDir(str(tmp_path / "link")).load()
    assert (tmp_path / "elsewhere" / "qga.state").exists()


def test_frozen_marker_symlink_refused(tmp_path) -> None:
    from qga.state import StateDir

    state = StateDir(str(tmp_path))
    os.symlink(str(tmp_path / "victim"), state.frozen_path)
    with pytest.raises(errors.QgaError, match="failed to create frozen state file"):
        state.create_frozen_marker()
    assert not (tmp_path / "victim").exists()


# -- EACCES/EPERM hints --------------------------------------------------------------------------

@pytest.mark.parametrize("enforce,hinted", [("1", True), ("0", False), (None, False)])
def test_permission_errors_name_object_and_hint_selinux(tmp_path, monkeypatch, enforce, hinted) -> None:
    flag = tmp_path / "enforce"
    if enforce is not None:
        flag.write_text(enforce)
    # os_error() asks selinux_enforcing() with its default path: point it at our file.
    monkeypatch.setattr(errors, "selinux_enforcing", functools.partial(errors.selinux_enforcing, str(flag)))
    err = errors.os_error("failed to open file '/etc/x' (mode: 'r')",
                          PermissionError(errno.EACCES, "Permission denied"), "/etc/x")
    assert err.desc.startswith("failed to open file '/etc/x' (mode: 'r'): Permission denied")
    assert ("SELinux is enforcing" in err.desc) is hinted
    assert ("'/etc/x'" in err.desc.split(": Permission denied", 1)[1]) is hinted
    other = errors.os_error("failed to open file '/x'", FileNotFoundError(errno.ENOENT, "x"), "/x")
    assert "SELinux" not in other.desc


# -- --self-test ---------------------------------------------------------------------------------

def _listing(path: str) -> List[str]:
    return sorted(os.listdir(path))


def test_self_test_ok_changes_nothing(agent_dir: str) -> None:
    before = _listing(agent_dir)
    res = run_cli("-m", "unix-listen", "-p", os.path.join(agent_dir, "sock"), "-t", agent_dir,
                  "--block-groups", "user-auth", "--self-test")
    assert res.returncode == 0, res.stdout + res.stderr
    assert _listing(agent_dir) == before, "self-test created files"
    out = res.stdout
    assert "[ OK ] channel unix-listen" in out and f"[ OK ] state directory {agent_dir}" in out
    assert "[INFO] commands [user-auth]:" in out and "all disabled" in out
    assert "[INFO] disabled commands: guest-set-user-password" in out
    assert "[INFO] SELinux:" in out and "mount " in out
    assert out.rstrip().endswith("result: OK")


def test_self_test_reports_problems(agent_dir: str) -> None:
    open(os.path.join(agent_dir, "qga.state.isfrozen"), "w").close()
    res = run_cli("-m", "unix-listen", "-p", "/nonexistent-dir/sock", "-t", agent_dir, "--self-test")
    assert res.returncode == 1
    assert "[FAIL] channel unix-listen /nonexistent-dir/sock: directory /nonexistent-dir does not exist" \
        in res.stdout
    assert "[FAIL] frozen marker" in res.stdout and "2 problem(s) found" in res.stdout
    missing = run_cli("-m", "virtio-serial", "-p", "/dev/qga-no-such-port", "-t", "/nonexistent",
                      "--self-test")
    assert missing.returncode == 1
    assert "[FAIL] channel virtio-serial /dev/qga-no-such-port: No such file or directory" in missing.stdout
    assert "[FAIL] state directory /nonexistent: No such file or directory" in missing.stdout


def test_self_test_opens_char_device_and_reports_selinux(tmp_path) -> None:
    flag = tmp_path / "enforce"
    flag.write_text("1")
    config = Config(method="isa-serial", path="/dev/null", statedir=str(tmp_path))
    out = io.StringIO()
    assert run_self_test(config, out, selinux_path=str(flag)) == 0
    text = out.getvalue()
    assert "[ OK ] channel isa-serial /dev/null: exists and can be opened read/write" in text
    assert "[INFO] SELinux: enforcing" in text
    test = SelfTest(Config(method="unix-listen", path=str(tmp_path / "s"), statedir=str(tmp_path),
                           block_groups=["protocol"]))
    test.run()
    assert any(r[0] == "WARN" and "has no effect" in r[2] for r in test.results)


def test_frozen_safe_list_is_qemus() -> None:
    assert Registry(load()).frozen_safe == {"guest-ping", "guest-info", "guest-sync", "guest-sync-delimited",
                                            "guest-fsfreeze-status", "guest-fsfreeze-thaw"}
