"""The freeze-start record beside qemu-ga's isfrozen marker (issue 14): kept in step with the marker."""
from __future__ import annotations

import os

from qga.state import FreezeStart, StateDir
from tests.agentproc import start


def test_record_describes_only_the_marker_it_was_written_for(tmp_path) -> None:
    state = StateDir(str(tmp_path))
    state.load()
    state.create_frozen_marker()
    state.record_freeze_start(FreezeStart("boot-a", 123.25))
    assert state.freeze_start() == FreezeStart("boot-a", 123.25)
    assert os.path.getsize(state.frozen_path) == 0  # the marker stays qemu-ga's empty file
    # qemu-ga thawed (removing only the marker) and froze again: a new marker.
    os.unlink(state.frozen_path)
    state.create_frozen_marker()
    os.utime(state.frozen_path, ns=(1, 1))
    assert state.freeze_start() is None
    state.remove_frozen_marker()
    assert not os.path.exists(state.since_path) and not os.path.exists(state.frozen_path)


def test_agent_drops_a_stale_record_when_not_frozen(agent_dir: str) -> None:
    stale = os.path.join(agent_dir, "qga.state.isfrozen.since")
    with open(stale, "w") as f:
        f.write("[freeze]\nboot-id=x\nboottime=1.0\nmarker=1:1\n")
    proc = start("ours", tmpdir=agent_dir)
    try:
        conn = proc.connect()
        conn.sync()
        assert conn.cmd("guest-fsfreeze-status") == "thawed"
        assert not os.path.exists(stale)
    finally:
        assert proc.stop() == 0
