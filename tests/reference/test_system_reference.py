"""Read-only system commands: qemu-ga-py against the system qemu-ga (7.2).

Stable values must be byte-identical replies (this also checks QEMU's member
order); volatile ones (clock, counters) are compared by fields and types.
If /usr/sbin/qemu-ga is missing these tests fail (tests.agentproc says how
to install it); they never skip.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

from qga.linux import utmp
from tests.agentproc import AgentProcess, Conn, start

pytestmark = pytest.mark.reference

DATA = Path(__file__).resolve().parents[1] / "data"
Pair = Tuple[Conn, Conn]


def _start_pair(env: Optional[Dict[str, str]] = None) -> Tuple[AgentProcess, AgentProcess]:
    return start("ours", env=env), start("reference", env=env)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    ours, ref = _start_pair()
    try:
        yield ours.connect(), ref.connect()
    finally:
        ours.stop()
        ref.stop()


def raw(conn: Conn, execute: str) -> bytes:
    conn.send(b'{"execute": "%s"}\n' % execute.encode())
    return conn.read_line()


@pytest.mark.parametrize("execute", [
    "guest-get-host-name", "guest-get-osinfo", "guest-get-vcpus", "guest-get-timezone",
    "guest-get-memory-block-info", "guest-get-memory-blocks",
])
def test_byte_identical(pair: Pair, execute: str) -> None:
    ours, ref = pair
    assert raw(ours, execute) == raw(ref, execute)


def test_get_time(pair: Pair) -> None:
    ours, ref = pair
    a, b = ours.cmd("guest-get-time"), ref.cmd("guest-get-time")
    assert isinstance(a, int) and a % 1000 == 0 and abs(a - b) < 2 * 10**9


def test_cpustats_fields(pair: Pair) -> None:
    ours, ref = pair
    # The reference is asked before and after ours: each of our counters lies
    # between its two readings of the same /proc/stat counter.
    before = ref.cmd("guest-get-cpustats")
    mine = ours.cmd("guest-get-cpustats")
    after = ref.cmd("guest-get-cpustats")
    assert [(e["cpu"], list(e)) for e in mine] == [(e["cpu"], list(e)) for e in before]
    for low, x, high in zip(before, mine, after):
        assert x["type"] == "linux"
        for key, value in x.items():
            if key in ("cpu", "type"):
                continue
            assert isinstance(value, int), key
            # proc(5): iowait is not monotonic (it may decrease), so it cannot be bracketed.
            if key != "iowait":
                assert low[key] <= value <= high[key], (x["cpu"], key)


def test_get_users(pair: Pair) -> None:
    ours, ref = pair
    assert ours.cmd("guest-get-users") == ref.cmd("guest-get-users")


def test_get_load_is_ours_only(pair: Pair) -> None:
    """10.0 added guest-get-load; 7.2 does not know it."""
    ours, ref = pair
    load = ours.cmd("guest-get-load")
    assert set(load) == {"load1m", "load5m", "load15m"}
    assert ref.request({"execute": "guest-get-load"})["error"]["class"] == "CommandNotFound"


@pytest.mark.parametrize("name", ["qemu-test-os-release", "quirks-os-release", "badline-os-release",
                                  "latin1-os-release", "crlf-os-release"])
def test_osinfo_fixtures(name: str) -> None:
    """QGA_OS_RELEASE quirks, byte for byte."""
    ours, ref = _start_pair({"QGA_OS_RELEASE": str(DATA / "osrelease" / name)})
    try:
        assert raw(ours.connect(), "guest-get-osinfo") == raw(ref.connect(), "guest-get-osinfo")
    finally:
        ours.stop()
        ref.stop()


@pytest.mark.parametrize("tz", ["EST5EDT", "Asia/Kolkata", "<+0330>-3:30", "UTC"])
def test_timezone(tz: str) -> None:
    ours, ref = _start_pair({"TZ": tz})
    try:
        assert raw(ours.connect(), "guest-get-timezone") == raw(ref.connect(), "guest-get-timezone")
    finally:
        ours.stop()
        ref.stop()


@pytest.mark.root
def test_users_from_utmp_fixture() -> None:
    """qemu-ga reads the fixed /var/run/utmp: install the glibc-written fixture
    there for the duration of the test (only when the machine has none)."""
    path = "/var/run/utmp"
    if os.path.exists(path):
        pytest.fail(f"{path} exists on this machine; refusing to replace it (run on a CI machine)")
    if utmp.layout_for().size != 384:
        pytest.fail("the utmp fixture has the x86_64 layout; regenerate it with make_utmp.py")
    shutil.copyfile(DATA / "utmp" / "x86_64-utmp", path)
    try:
        ours, ref = _start_pair()
        try:
            a, b = raw(ours.connect(), "guest-get-users"), raw(ref.connect(), "guest-get-users")
        finally:
            ours.stop()
            ref.stop()
    finally:
        os.unlink(path)
    assert a == b
    assert b'"alice"' in a and b"1699990000.125" in a


def test_set_time_validation_matches(pair: Pair) -> None:
    """Only arguments that fail before the clock is touched."""
    ours, ref = pair
    for args in ({"time": "x"}, {"time": 1.5}, {"foo": 1}):
        req = {"execute": "guest-set-time", "arguments": args}
        assert ours.request(req) == ref.request(req)


def test_shutdown_mode_validation_matches(pair: Pair) -> None:
    ours, ref = pair
    req = {"execute": "guest-shutdown", "arguments": {"mode": "sleep"}}
    assert ours.request(req) == ref.request(req)


def test_set_vcpus_validation_matches(pair: Pair) -> None:
    """Errors decided before anything is written (unknown cpu, bad types, empty list)."""
    ours, ref = pair
    for args in ({"vcpus": []}, {"vcpus": [{"logical-id": 1}]}, {"vcpus": [{"logical-id": "1", "online": True}]},
                 {"vcpus": [{"logical-id": 0, "online": True}]}):
        req = {"execute": "guest-set-vcpus", "arguments": args}
        assert ours.request(req) == ref.request(req), args
