"""Time, identity and load commands; os-release and utmp readers on fixtures."""
from __future__ import annotations

import errno
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from qga.codec import dumps
from qga.commands import load
from qga.commands import system
from qga.config import Config
from qga.context import Context
from qga.errors import QgaError
from qga.linux import clock, osrelease, utmp
from qga.linux.sysfs import FileCache
from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir

DECLARED = {c.name: c for c in load()}

DATA = Path(__file__).resolve().parents[1] / "data"
OSREL = DATA / "osrelease"


def make_ctx(tmp_path: Path) -> Context:
    """A Context built from real objects, for calling handlers directly."""
    return Context(Config(), StateDir(str(tmp_path)), Loop(), Registry([]))


def validate(name: str, args: Dict[str, Any]) -> Dict[str, Any]:
    """Arguments as the dispatcher would pass them (QAPI validation included)."""
    return DECLARED[name].validate(args)


def fake_program(path: Path, body: str) -> str:
    """An executable shell script standing in for a system program."""
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


# -- os-release ------------------------------------------------------------------

def test_osrelease_qemu_test_file() -> None:
    """The values QEMU's own test-qga expects from its os-release fixture."""
    info = osrelease.parse_os_release((OSREL / "qemu-test-os-release").read_text())
    assert info == {
        "id": "qemu-ga-test", "name": "QEMU-GA", "pretty-name": "QEMU Guest Agent test",
        "version": "Test 1", "version-id": "1", "variant": "Unit test \"'$`\\ and \\\\ etc.",
        "variant-id": "unit-test",
    }


def test_osrelease_quirks() -> None:
    info = osrelease.parse_os_release((OSREL / "quirks-os-release").read_text())
    assert info == {
        "id": "spaced",                 # spaces around '=' tolerated
        "name": "'single",              # single quotes are not quotes
        "pretty-name": "unterminatedd",  # missing quote duplicates the last char
        "version": "unquoted",          # cut at the first space (and ';')
        "version-id": "1\\n2",          # unknown escapes stay literal
        "variant": "",                  # empty value is kept
    }


@pytest.mark.parametrize("value, expected", [
    ('a;b c', "a"), ('"x\\"y" tail', 'x"y'), ('"a\\$b', "a$b$b"), ('"', '"'), ('""', ""),
    ("plain", "plain"), ('"\\q"', "\\q"),
])
def test_unquote(value: str, expected: str) -> None:
    assert osrelease.unquote(value) == expected


@pytest.mark.parametrize("name", ["badline-os-release", "latin1-os-release"])
def test_osrelease_invalid_file_ignored(name: str) -> None:
    """One bad line or non-UTF-8 content discards the whole file."""
    assert osrelease.read_os_release(env=str(OSREL / name)) == {}


def test_osrelease_crlf() -> None:
    info = osrelease.read_os_release(env=str(OSREL / "crlf-os-release"))
    # glib drops CR before LF only: the unterminated last line keeps its CR.
    assert info == {"id": "crlf", "name": "CR LF", "version-id": "7\r"}


@pytest.mark.parametrize("text", ["=x\n", "[bad\n", "A]=1\n", "[g]\nID=x\n", " =1\n", "Encoding=latin1\n"])
def test_keyfile_rejects_or_hides(text: str) -> None:
    assert osrelease.parse_os_release(text) in (None, {})


def test_osrelease_fallback_and_env(tmp_path: Path) -> None:
    bad = tmp_path / "etc-os-release"
    bad.write_text("garbage line\n")
    good = str(OSREL / "debian12-usr-lib-os-release")
    # An unparsable /etc/os-release falls back to /usr/lib/os-release ...
    assert osrelease.read_os_release(env=None, paths=(str(bad), good))["id"] == "debian"
    # ... but $QGA_OS_RELEASE has no fallback.
    assert osrelease.read_os_release(env=str(bad), paths=(good,)) == {}


def test_get_osinfo_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QGA_OS_RELEASE", str(OSREL / "qemu-test-os-release"))
    info = system.get_osinfo(make_ctx(tmp_path))
    uts = os.uname()
    assert list(info)[:3] == ["kernel-release", "kernel-version", "machine"]
    assert (info["kernel-release"], info["machine"]) == (uts.release, uts.machine)
    assert info["id"] == "qemu-ga-test"


def test_get_osinfo_follows_every_change_of_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached reply is re-read whenever a candidate file changes, appears or goes."""
    first, second = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    monkeypatch.delenv("QGA_OS_RELEASE", raising=False)
    monkeypatch.setattr(system, "OS_RELEASE_PATHS", (str(first), str(second)))
    ctx = make_ctx(tmp_path)
    ctx.subject(system.OsinfoCache).files.settle_ns = 0  # cache even files written just now
    second.write_text("ID=usr\n")
    assert system.get_osinfo(ctx)["id"] == "usr"
    first.write_text("ID=etc\n")  # appears: it wins
    assert system.get_osinfo(ctx)["id"] == "etc"
    first.write_text("ID=etc2\n")  # same inode, new size and mtime
    assert system.get_osinfo(ctx)["id"] == "etc2"
    st = first.stat()
    first.write_text("ID=etc3\n")  # same size; the mtime (ns) or ctime differs
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert system.get_osinfo(ctx)["id"] == "etc3"
    assert b'"id": "etc3"' in dumps(system.get_osinfo(ctx))  # the reply text follows too
    first.unlink()
    assert system.get_osinfo(ctx)["id"] == "usr"
    monkeypatch.setenv("QGA_OS_RELEASE", str(OSREL / "qemu-test-os-release"))
    assert system.get_osinfo(ctx)["id"] == "qemu-ga-test"


def test_file_cache_loads_once_per_change(tmp_path: Path) -> None:
    loads = []
    path = tmp_path / "f"

    def load(p: str) -> str:
        loads.append(p)
        return Path(p).read_text()

    cache = FileCache(load, settle_ns=0)
    path.write_text("one")
    assert [cache.get(str(path)) for _ in range(3)] == ["one"] * 3
    assert len(loads) == 1  # unchanged: the value is reused
    st = path.stat()
    path.write_text("two")  # same size, mtime put back: the ctime still tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.get(str(path)) == "two" and len(loads) == 2
    path.unlink()
    with pytest.raises(FileNotFoundError):
        cache.get(str(path))
    # A file changed within settle_ns (one timestamp tick could hold a second
    # change the stat would not show) is read again at each call.
    path.write_text("three")
    fresh = FileCache(load, settle_ns=3600 * 10**9)
    assert [fresh.get(str(path)) for _ in range(2)] == ["three"] * 2
    assert len(loads) == 4


def test_get_osinfo_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QGA_OS_RELEASE", raising=False)
    info = system.get_osinfo(make_ctx(tmp_path))
    assert info["id"] and info["pretty-name"] and info["kernel-version"] == os.uname().version


# -- utmp ------------------------------------------------------------------------

def test_utmp_records_written_by_glibc() -> None:
    records = list(utmp.read_utmp(str(DATA / "utmp" / "x86_64-utmp"), utmp.layout_for("x86_64")))
    assert [r.type for r in records] == [2, 6, 7, 7, 7, 8, 7, 7]
    assert records[3].user == "bob" and records[3].host == "192.0.2.7" and records[3].line == "pts/0"


def test_users_dedup_earliest_login() -> None:
    users = utmp.logged_in_users(str(DATA / "utmp" / "x86_64-utmp"), utmp.layout_for("x86_64"))
    assert users == [
        {"user": "alice", "login-time": 1699990000.125},     # earliest of two logins
        {"user": "bob", "login-time": 1700000200.25},
        {"user": "a" * 32, "login-time": 1700000400.999999},  # no NUL in a full ut_user
    ]
    assert all(isinstance(u["login-time"], float) for u in users)


def test_users_missing_file_and_partial_record(tmp_path: Path) -> None:
    assert utmp.logged_in_users(str(tmp_path / "none")) == []
    data = (DATA / "utmp" / "x86_64-utmp").read_bytes()
    cut = tmp_path / "cut"
    cut.write_bytes(data[:384 * 3 + 100])
    assert [u["user"] for u in utmp.logged_in_users(str(cut), utmp.layout_for("x86_64"))] == ["alice"]


def test_utmp_layouts() -> None:
    assert utmp.layout_for("x86_64").size == 384
    assert utmp.layout_for("aarch64").size == 400


def _x86_64_utmp_only() -> None:
    """Skip where this host's utmp records are not x86_64's 384 bytes (the fixtures' layout)."""
    size = utmp.layout_for().size
    if size != 384:
        pytest.skip(f"this host's utmp records are {size} bytes; the fixture has x86_64's 384-byte layout")


def test_get_users_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "UTMP_PATH", str(DATA / "utmp" / "x86_64-utmp"))
    _x86_64_utmp_only()
    assert [u["user"] for u in system.get_users(make_ctx(tmp_path))][:2] == ["alice", "bob"]


def test_get_users_follows_the_utmp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _x86_64_utmp_only()
    path = tmp_path / "utmp"
    monkeypatch.setattr(system, "UTMP_PATH", str(path))
    ctx = make_ctx(tmp_path)
    ctx.subject(system.UsersCache).settle_ns = 0  # cache even a file written just now
    assert system.get_users(ctx) == []
    data = (DATA / "utmp" / "x86_64-utmp").read_bytes()
    path.write_bytes(data)
    assert [u["user"] for u in system.get_users(ctx)] == ["alice", "bob", "a" * 32]
    path.write_bytes(data[:384 * 3])  # written in place: new size
    assert [u["user"] for u in system.get_users(ctx)] == ["alice"]
    st = path.stat()
    path.write_bytes(data[384 * 3:384 * 6])  # same size, mtime put back: the ctime still tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [u["user"] for u in system.get_users(ctx)] == ["bob", "alice"]
    path.unlink()
    assert system.get_users(ctx) == []


# -- time, zone, host name, load -----------------------------------------------------

def test_get_time(tmp_path: Path) -> None:
    before = time.time_ns()
    value = system.get_time(make_ctx(tmp_path))
    assert isinstance(value, int) and value % 1000 == 0
    assert before - 1000 <= value <= time.time_ns()


@pytest.mark.parametrize("tz, zone, offset", [
    ("UTC", "UTC", 0), ("EST5", "EST", -18000), ("<+0330>-3:30", "+0330", 12600),
])
def test_get_timezone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tz: str, zone: str, offset: int) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        assert system.get_timezone(make_ctx(tmp_path)) == {"zone": zone, "offset": offset}
    finally:
        monkeypatch.undo()
        time.tzset()


def test_get_host_name(tmp_path: Path) -> None:
    assert system.get_host_name(make_ctx(tmp_path)) == {"host-name": socket.gethostname()}


def test_get_load(tmp_path: Path) -> None:
    # The kernel updates the averages every 5 s: ours is one of the readings around the call.
    before = os.getloadavg()
    load = system.get_load(make_ctx(tmp_path))
    after = os.getloadavg()
    assert list(load) == ["load1m", "load5m", "load15m"]
    assert tuple(load.values()) in (before, after)


# -- set-time (validation and helper only: the clock is never changed here) -------------

@pytest.mark.parametrize("value", [4 * 10**18, -(10**10), 3155760000 * 10**9])
def test_set_time_invalid(tmp_path: Path, value: int) -> None:
    with pytest.raises(QgaError, match="^Invalid time$"):
        system.set_time(make_ctx(tmp_path), **validate("guest-set-time", {"time": value}))


def test_set_time_small_negative_is_einval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-5 ns passes the year check (truncation), then settimeofday says EINVAL."""
    clock.check_time(-5)
    with pytest.raises(OSError) as exc:
        clock.set_system_time(-5)
    assert exc.value.errno == errno.EINVAL

    def refused(time_ns: int) -> None:  # the command's wording, without touching the clock
        raise exc.value

    monkeypatch.setattr(clock, "set_system_time", refused)
    with pytest.raises(QgaError, match="^Failed to set time to guest: Invalid argument$"):
        system.set_time(make_ctx(tmp_path), time=-5)


def test_set_time_too_large_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreachable with a 64-bit time_t through the schema; the wording is still qemu-ga's."""
    with pytest.raises(clock.InvalidTime) as exc:
        clock.check_time(1 << 100)
    assert exc.value.too_large
    with pytest.raises(QgaError, match=f"^Time {1 << 100} is too large$"):
        system.set_time(make_ctx(tmp_path), time=1 << 100)


def test_set_time_args() -> None:
    with pytest.raises(QgaError, match="Invalid parameter type for 'time', expected: integer"):
        validate("guest-set-time", {"time": 1.5})


def test_set_time_from_rtc_runs_hwclock_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "args"
    monkeypatch.setattr(clock, "HWCLOCK", fake_program(tmp_path / "hwclock", f'echo "$@" > {log}'))
    system.set_time(make_ctx(tmp_path))
    assert log.read_text() == "-s\n"


def test_set_time_hwclock_failure_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "HWCLOCK", fake_program(tmp_path / "hwclock", "echo rtc busy; exit 3"))
    with pytest.raises(QgaError) as err:
        system.set_time(make_ctx(tmp_path))
    assert err.value.desc == "child process has failed to set hardware clock to system time: rtc busy\n"
    monkeypatch.setattr(clock, "HWCLOCK", str(tmp_path / "missing"))
    with pytest.raises(QgaError) as err:
        system.set_time(make_ctx(tmp_path))
    assert err.value.desc == ("child process has failed to set hardware clock to system time: "
                              f"failed to exec '{tmp_path / 'missing'}': No such file or directory\n")


def test_commands_declared() -> None:
    for name in ("guest-get-time", "guest-set-time", "guest-get-timezone", "guest-get-host-name",
                 "guest-get-osinfo", "guest-get-users", "guest-get-load"):
        cmd = DECLARED[name]
        assert cmd.group == ("system-control" if name == "guest-set-time" else "info")
    assert DECLARED["guest-set-time"].audit
