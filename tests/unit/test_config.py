"""Key files, config precedence and -D, as qemu-ga reads and prints them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qga import keyfile
from qga.cli import _PLAIN, _parse_plain, build_config, build_parser
from qga.config import Config, ConfigError, dump, load_file

REPO = Path(__file__).resolve().parents[2]
QEMU_TEST_CONF = ("[general]\ndaemon=false\nmethod=virtio-serial\npath=/path/to/org.qemu.guest_agent.0\n"
                  "pidfile=/var/foo/qemu-ga.pid\nstatedir=/var/state\nverbose=true\n"
                  "block-rpcs=guest-ping;guest-get-time\n")


def run_cli(*args: str, env: dict = None) -> subprocess.CompletedProcess:
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "qga", *args], capture_output=True, text=True,
                          env=full_env, timeout=30)


def test_keyfile_parsing_and_errors() -> None:
    groups = keyfile.parse("# c\n[general]\n key = a\\sb \n\n[other]\nx=1\n")
    assert groups == {"general": {"key": "a b"}, "other": {"x": "1"}}
    with pytest.raises(keyfile.KeyFileError, match="which is not a key-value pair, group, or comment"):
        keyfile.parse("[general]\nbogus\n")
    assert keyfile.parse_bool("k", "1") is True
    with pytest.raises(keyfile.KeyFileError, match="cannot be interpreted"):
        keyfile.parse_bool("daemon", "maybe")


def test_file_then_command_line_lists_accumulate(tmp_path: Path) -> None:
    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\nmethod=isa-serial\nblock-rpcs=guest-exec,guest-file-open\nverbose=1\n")
    ns = build_parser().parse_args(["-c", str(conf), "-m", "unix-listen", "-p", "/s",
                                    "-b", "guest-ping,guest-info", "-b", "x"])
    config = build_config(ns)
    assert config.method == "unix-listen" and config.verbose is True
    assert config.block_rpcs == ["guest-file-open", "guest-exec", "guest-info", "guest-ping", "x"]


def test_missing_default_file_is_ignored_but_explicit_is_fatal(tmp_path: Path) -> None:
    load_file(Config(), str(tmp_path / "absent"), explicit=False)
    with pytest.raises(ConfigError, match="error loading configuration from path"):
        load_file(Config(), str(tmp_path / "absent"), explicit=True)


QEMU_TEST_DUMP = ["[general]", "daemon=false", "method=virtio-serial",
                  "path=/path/to/org.qemu.guest_agent.0", "pidfile=/var/foo/qemu-ga.pid",
                  "statedir=/var/state", "verbose=true", "retry-path=false",
                  "block-rpcs=guest-ping;guest-get-time", "allow-rpcs="]


def test_dump_of_a_stock_config_is_exactly_qemu_gas(tmp_path: Path) -> None:
    """No extension key was set: -D prints qemu-ga 10.2's keys and nothing else."""
    conf = tmp_path / "test-qga-config"
    conf.write_text(QEMU_TEST_CONF)
    result = run_cli("-D", env={"QGA_CONF": str(conf)})
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.splitlines() == QEMU_TEST_DUMP


def test_dump_adds_the_extension_keys_that_were_set_and_reads_back(tmp_path: Path) -> None:
    conf = tmp_path / "test-qga-config"
    conf.write_text(QEMU_TEST_CONF + "command-timeout=30\ninterface-exclude=veth*\n")
    result = run_cli("-D", "--file-nofollow", "--interface-exclude", "tap*",
                     env={"QGA_CONF": str(conf)})
    assert result.returncode == 0 and result.stderr == ""
    # qemu-ga's keys first and unchanged; the extension keys that were set follow, in
    # the documented order; those left at their defaults (fsfreeze-timeout, ...) do not.
    assert result.stdout.splitlines() == QEMU_TEST_DUMP + [
        "command-timeout=30", "interface-exclude=veth*,tap*", "file-nofollow=true"]
    # Read back as a config file it gives the same settings (a list's items come back
    # reversed, as qemu-ga's own block-rpcs do).
    again = tmp_path / "again"
    again.write_text(result.stdout)
    reread = keyfile.parse(run_cli("-D", "-c", str(again)).stdout)["general"]
    first = keyfile.parse(result.stdout)["general"]
    assert reread.pop("interface-exclude") == "tap*,veth*" and first.pop("interface-exclude") == "veth*,tap*"
    assert reread == first


def test_dump_of_defaults_includes_optional_keys_only_when_set() -> None:
    text = dump(Config(logfile="/l", fsfreeze_hook="/h"))
    assert text.splitlines()[3:7] == ["path=/dev/virtio-ports/org.qemu.guest_agent.0", "logfile=/l",
                                      "pidfile=/var/run/qemu-ga.pid", "fsfreeze-hook=/h"]


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "qemu-ga-py: unrecognized option '--bogus'"),
    (["-m", "unix-listen", "-D"], "must specify a path for this channel"),
    (["-m", "pigeon", "-D"], "unsupported channel method/type: pigeon"),
    (["-c", "/nonexistent/qga.conf", "-D"], "error loading configuration from path: /nonexistent/qga.conf"),
    (["--frozen-sigterm", "maybe"], "invalid choice"),
])
def test_bad_options_exit_1_with_a_message(args: list, message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 1
    assert message in result.stderr


def test_version_help_and_rpc_list() -> None:
    assert run_cli("-V").stdout.startswith("QEMU Guest Agent 10.2.0")
    helptext = run_cli("--help").stdout
    for option in ("--method", "--path", "--fsfreeze-hook", "--allow-rpcs", "--retry-path", "--dump-conf"):
        assert option in helptext
    names = run_cli("-b", "help").stdout.split()
    assert names[:3] == ["guest-sync-delimited", "guest-sync", "guest-ping"]


def _sample(flag: str) -> list:
    keywords = _PLAIN[flag][1]
    if keywords.get("action") == "store_true":
        return [flag]
    return [flag, "thaw" if "choices" in keywords else "5" if "type" in keywords else "a,b"]


@pytest.mark.parametrize("argv", [
    [], ["-m", "unix-listen", "-p", "/s", "-t", "/d"], ["--path", "a", "-p", "b", "-p", ""],
    ["-b", "a,b", "--block-rpcs", "c", "-b", ",", "-a", "x"],
    *(_sample(flag) for flag in _PLAIN),
])
def test_the_plain_reader_makes_argparses_namespace(argv: list) -> None:
    """Start-up reads the usual command lines without argparse, to the same effect."""
    plain = _parse_plain(argv)
    assert plain is not None and vars(plain) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["-p"], ["-p", "-x"], ["-p", "--"], ["--pa", "x"], ["--path=x"], ["-px"], ["-vd"], ["-F"], ["-F/x"], ["x"],
    ["--frozen-sigterm", "never"], ["--command-timeout", "soon"], ["--max-file-handles", "1.5"],
])
def test_the_plain_reader_leaves_other_forms_and_errors_to_argparse(argv: list) -> None:
    assert _parse_plain(argv) is None

@pytest.mark.parametrize("how", ["file", "cli"])
def test_statvfs_timeout_reaches_guest_get_fsinfos_statvfs(how: str, tmp_path: Path) -> None:
    """The key and the option both end up as the wait of guest-get-fsinfo's bounded statvfs."""
    from qga.commands import storage
    from qga.context import Context
    from qga.loop import Loop
    from qga.registry import Registry
    from qga.state import StateDir

    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\nstatvfs-timeout=0.25\n")
    args = ["-c", str(conf)] if how == "file" else ["-c", str(tmp_path / "empty.conf"), "--statvfs-timeout", "0.25"]
    (tmp_path / "empty.conf").write_text("[general]\n")
    config = build_config(build_parser().parse_args(args))
    assert Config().statvfs_timeout == 2.0 and config.statvfs_timeout == 0.25
    ctx = Context(config, StateDir(str(tmp_path)), Loop(), Registry([]))
    try:
        assert storage.get_fsinfo(ctx) is not None
        assert storage._statvfs(ctx).timeout == 0.25
    finally:
        storage._statvfs(ctx).close()
        ctx.loop.close()
