"""The one Linux gate: commands that read Linux interfaces are absent elsewhere."""
from __future__ import annotations

import sys

import pytest

from qga.commands import load
from qga.registry import Registry

#: One command from each module that declares Linux-only commands.
LINUX_ONLY = {"guest-get-vcpus", "guest-suspend-disk", "guest-get-fsinfo", "guest-network-get-interfaces"}


def test_linux_only_commands_follow_the_platform_when_the_registry_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(Registry(load()).names()) >= LINUX_ONLY
    monkeypatch.setattr(sys, "platform", "freebsd14")
    names = set(Registry(load()).names())
    assert "guest-ping" in names and not LINUX_ONLY & names
