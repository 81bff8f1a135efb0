"""Slow handlers: a command stuck on a hung filesystem does not wedge the agent (issue 8).

The hung filesystem is real: a FUSE mount whose server never answers (see
:mod:`tests.hardening.hungfs`), in a mount namespace private to the agent.
With ``--command-timeout 2`` a ``guest-file-open`` below it gets an error
reply after 2 s, requests queued behind it are then served in order, the
next commands run in a fresh worker, and when the stuck calls finally fail
their late results are discarded (nothing is answered twice).
"""
from __future__ import annotations

import json
import os
import time
from typing import Iterator

import pytest

from tests.agentproc import ours_argv
from tests.hardening.hungfs import HungFsAgent, fuse_unavailable
from tests.hardening.util import parse_reply_line, thread_count
from tests.loopmount import loop_device
from tests.prereq import require

DEADLINE = 2.0


@pytest.fixture
def hung(agent_dir: str) -> Iterator[HungFsAgent]:
    """An agent with ``--command-timeout 2`` that sees a hung FUSE mount at ``<dir>/hung``."""
    require(fuse_unavailable())
    proc = HungFsAgent(ours_argv(agent_dir, ["--command-timeout", str(DEADLINE)]), agent_dir,
                       os.path.join(agent_dir, "hung"))
    try:
        yield proc
    finally:
        proc.cleanup()


def _send(conn, name: str, rid: int, **args) -> None:
    req = {"execute": name, "id": rid}
    if args:
        req["arguments"] = args
    conn.send(json.dumps(req).encode())


def test_hung_open_times_out_and_agent_serves_later_requests(hung: HungFsAgent, agent_dir: str) -> None:
    conn = hung.connect()
    quiet = conn.sync()  # what a sync skips on an idle connection: the reply to its own 0xFF
    assert hung.mountpoint in hung.agent_mounts(), "the hung mount is not in the agent's namespace"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        assert hung.mountpoint not in f.read(), "the hung mount leaked into the test's namespace"
    threads_before = thread_count(hung.pid)

    # 1. A file open on the hung filesystem: error at the deadline, not a wedge.  The
    # filesystem never answers, so any reply at all comes from the deadline; load can
    # only delay it, hence generous read timeouts and no upper bound on the time taken.
    start = time.monotonic()
    _send(conn, "guest-file-open", 1, path=os.path.join(hung.mountpoint, "file"), mode="r")
    _send(conn, "guest-ping", 2)          # queued behind it: served right after the deadline
    first = parse_reply_line(conn.read_line(DEADLINE + 60))
    elapsed = time.monotonic() - start
    assert first["id"] == 1 and "error" in first, first
    assert first["error"]["desc"] == f"command guest-file-open did not complete within {DEADLINE:g} seconds"
    assert elapsed >= DEADLINE, elapsed  # not early (a lower bound: load cannot break it)
    assert parse_reply_line(conn.read_line(60)) == {"return": {}, "id": 2}

    # 2. The agent is healthy: ping at once, a real file opens in the fresh worker.
    assert conn.request({"execute": "guest-ping"}, 1) == {"return": {}}
    path = os.path.join(agent_dir, "plain.txt")
    with open(path, "w", encoding="ascii") as f:
        f.write("hello")
    handle = conn.cmd("guest-file-open", timeout=DEADLINE, path=path, mode="r")
    assert conn.cmd("guest-file-read", timeout=DEADLINE, handle=handle)["buf-b64"] == "aGVsbG8="
    conn.cmd("guest-file-close", timeout=DEADLINE, handle=handle)

    # 3. A second stuck command also times out; threads grow by one per stuck call only.
    _send(conn, "guest-file-open", 3, path=os.path.join(hung.mountpoint, "other"), mode="r")
    reply = parse_reply_line(conn.read_line(DEADLINE + 60))
    assert reply["id"] == 3 and "did not complete" in reply["error"]["desc"], reply
    assert thread_count(hung.pid) <= threads_before + 2, "abandoned workers are not bounded by stuck calls"

    # 4. guest-get-fsinfo (statvfs of every mount) completes: a result, not the deadline's error.
    _send(conn, "guest-get-fsinfo", 4)
    reply = parse_reply_line(conn.read_line(DEADLINE + 60))
    assert reply["id"] == 4 and "return" in reply, reply

    # 5. The hung server goes away: the two stuck calls fail now, their late replies are
    # discarded (logged); nothing of them reaches the client before the sync reply.
    hung.release()
    discard = "discarding the late reply of an abandoned command"
    deadline = time.monotonic() + 60
    while hung.log().count(discard) < 2:
        assert time.monotonic() < deadline, f"the stuck calls never finished: {hung.log()}"
        time.sleep(0.02)
    assert conn.sync(77) == quiet
    assert conn.request({"execute": "guest-ping", "id": 5}, 60) == {"return": {}, "id": 5}
    assert hung.proc.poll() is None
    assert hung.log().count("did not finish within 2 s: abandoned") == 2
    conn.close()
    assert hung.stop() == 0, hung.log()


def test_sync_ping_info_answered_on_the_loop_while_the_worker_is_stuck(hung: HungFsAgent) -> None:
    """README: guest-sync, guest-ping and guest-info run on the event loop: with the worker thread
    stuck on the hung mount they are answered without a fresh worker; a worker command needs one."""
    conn = hung.connect()
    conn.sync()
    _send(conn, "guest-file-open", 1, path=os.path.join(hung.mountpoint, "file"), mode="r")
    reply = parse_reply_line(conn.read_line(60))
    assert "did not complete" in reply["error"]["desc"], reply  # its thread stays stuck in the kernel
    stuck = thread_count(hung.pid)
    assert conn.request({"execute": "guest-sync", "arguments": {"id": 9}}) == {"return": 9}
    conn.sync(10)  # guest-sync-delimited
    assert conn.request({"execute": "guest-ping", "id": 2}) == {"return": {}, "id": 2}
    assert "guest-ping" in [c["name"] for c in conn.cmd("guest-info")["supported_commands"]]
    assert thread_count(hung.pid) == stuck, "an inline command started a worker thread"
    handle = conn.cmd("guest-file-open", timeout=60, path="/dev/null")  # a worker command
    conn.cmd("guest-file-close", timeout=60, handle=handle)
    assert thread_count(hung.pid) == stuck + 1  # the fresh worker
    conn.close()
    hung.release()
    assert hung.stop() == 0, hung.log()


@pytest.mark.parametrize("how", ["file", "cli"])
def test_statvfs_timeout_bounds_guest_get_fsinfo_on_a_hung_block_mount(agent_dir: str, how: str) -> None:
    """README: statvfs-timeout (config file or option) is how long guest-get-fsinfo waits for one
    filesystem: a hung fuseblk mount (a real device number, so in the mount list) is skipped after it."""
    require(fuse_unavailable())
    conf = os.path.join(agent_dir, "qga.conf")
    with open(conf, "w", encoding="ascii") as f:
        f.write("[general]\nstatvfs-timeout=0.5\n" if how == "file" else "[general]\n")
    extra = ["-c", conf, "--command-timeout", "30"] + (["--statvfs-timeout", "0.5"] if how == "cli" else [])
    with loop_device() as (dev, _):
        mnt = os.path.join(agent_dir, "hungblk")
        hung = HungFsAgent(ours_argv(agent_dir, extra), agent_dir, mnt, blockdev=dev)
        try:
            conn = hung.connect(timeout=30)
            conn.sync()
            fsinfo = {f["mountpoint"]: f for f in conn.cmd("guest-get-fsinfo")}
            assert fsinfo[mnt]["type"] == "fuseblk" and "used-bytes" not in fsinfo[mnt]  # skipped
            assert "used-bytes" in fsinfo["/"]
            assert f"statvfs({mnt}) did not return within 0.5 s; skipping it until it does" in hung.log()
        finally:
            hung.cleanup()
