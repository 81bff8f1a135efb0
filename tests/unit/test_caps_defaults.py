"""The resource caps' defaults (README: 1024 file handles, 1024 exec records, 128 running execs) and their effect."""
from __future__ import annotations

import os
import resource
import signal
import threading
import time
from pathlib import Path

import pytest

from qga.cli import build_config, build_parser
from qga.commands import files
from qga.commands import guest_exec as gx
from qga.config import Config
from qga.context import Context
from qga.errors import QgaError
from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir


def _wait_exited(ctx: Context, pid: int) -> None:
    deadline = time.monotonic() + 30
    while not gx.guest_exec_status(ctx, pid)["exited"]:
        assert time.monotonic() < deadline, f"pid {pid} did not finish"
        time.sleep(0.005)


def test_default_caps_are_1024_1024_128_and_bite_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QGA_CONF", str(tmp_path / "absent.conf"))  # no file: the built-in defaults
    config = build_config(build_parser().parse_args([]))
    assert (config.max_file_handles, config.max_exec_records, config.max_concurrent_execs) == (1024, 1024, 128)
    assert config == Config()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:  # 1024 handles are 1024 descriptors in this process
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    state = StateDir(str(tmp_path))
    loop = Loop()
    loop.add_signal_handler(signal.SIGCHLD, lambda _: loop.reap_children())
    ctx = Context(config, state, loop, Registry([]))
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    sleepers = []
    try:
        handles = [files.file_open(ctx, "/dev/null") for _ in range(1024)]
        with pytest.raises(QgaError, match=r"too many open guest files \(max-file-handles is 1024\)"):
            files.file_open(ctx, "/dev/null")
        for handle in handles:
            files.file_close(ctx, handle)

        sleepers = [gx.guest_exec(ctx, "/bin/sleep", arg=["60"])["pid"] for _ in range(128)]
        with pytest.raises(QgaError, match=r"still running \(max-concurrent-execs is 128\)"):
            gx.guest_exec(ctx, "/bin/true")
        for pid in sleepers:
            os.kill(pid, signal.SIGKILL)
        for pid in sleepers:
            _wait_exited(ctx, pid)  # queried: these records are gone now

        # 1025 finished, never-queried records: the oldest one is dropped, the 1024 newer ones kept.
        pids = []
        deadline = time.monotonic() + 120
        while len(pids) < 1025:
            try:
                pids.append(gx.guest_exec(ctx, "/bin/true")["pid"])
            except QgaError as exc:  # 128 not yet reaped on a loaded machine: the cap works, wait
                assert "max-concurrent-execs is 128" in exc.desc and time.monotonic() < deadline, exc.desc
                time.sleep(0.01)
        deadline = time.monotonic() + 60
        while not all(r.done for r in gx._table(ctx).records.values()):
            assert time.monotonic() < deadline, "the /bin/true children did not all finish"
            time.sleep(0.01)
        records = gx._table(ctx).records
        assert len(records) == 1024 and pids[0] not in records and pids[1] in records and pids[-1] in records
    finally:
        for pid in sleepers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        loop.close()
