"""Shared fixtures: agents on unix sockets (ours and the reference qemu-ga)."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import pytest

from tests.agentproc import AgentProcess, start
from tests.prereq import require


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Root-only tests skip, naming the reason, when not root (fail under CI=true)."""
    if "root" in item.keywords and os.geteuid() != 0:
        require("needs uid 0 (run the suite as root, as CI does)")


@pytest.fixture
def agent_dir() -> Iterator[str]:
    """A temporary state directory, removed afterwards."""
    path = tempfile.mkdtemp(prefix="qga-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def agent(agent_dir: str) -> Iterator[AgentProcess]:
    """qemu-ga-py on ``<agent_dir>/sock``; must exit 0 on SIGTERM (as test-qga.c asserts)."""
    proc = start("ours", tmpdir=agent_dir)
    yield proc
    status = proc.stop()
    assert status == 0, f"agent exited with {status}: {proc.log()}"


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """The system qemu-ga (Debian 7.2) on a unix socket."""
    proc = start("reference", tmpdir=str(tmp_path_factory.mktemp("ref")))
    yield proc
    proc.stop()
