"""The registry: schema order, policy, groups and the frozen gate."""
from __future__ import annotations

import pytest

from qga.errors import CommandNotFound
from qga.registry import FROZEN_SAFE, GROUPS, SCHEMA_ORDER, Command, Registry
from qga.schema import compile_args


def make(name: str, group: str = "info", available: bool = True) -> Command:
    return Command(name=name, func=lambda ctx: None, group=group, validate=compile_args(None),
                   available=lambda: available)


@pytest.fixture
def registry() -> Registry:
    return Registry([make("guest-get-time"), make("guest-ping", "protocol"), make("x-ext", "info"),
                     make("guest-sync", "protocol"), make("guest-exec", "unrestricted"),
                     make("guest-get-devices", available=False)])


def test_registration_follows_schema_order_and_unavailable_is_absent(registry: Registry) -> None:
    assert registry.names() == ["guest-sync", "guest-ping", "guest-get-time", "guest-exec", "x-ext"]
    with pytest.raises(CommandNotFound, match="^The command guest-get-devices has not been found$"):
        registry.lookup("guest-get-devices")


def test_info_lists_newest_first(registry: Registry) -> None:
    assert [c["name"] for c in registry.info()] == ["x-ext", "guest-exec", "guest-get-time",
                                                    "guest-ping", "guest-sync"]


def test_block_allow_and_groups(registry: Registry) -> None:
    registry.configure(allow=["guest-ping", "guest-exec", "guest-sync"], block=["guest-exec"])
    assert registry.policy_disabled() == ["guest-get-time", "guest-exec", "x-ext"]
    with pytest.raises(CommandNotFound, match="^Command guest-exec has been disabled: the command is not allowed$"):
        registry.lookup("guest-exec")
    registry.configure(allow=None, block=[], blocked_groups=["unrestricted", "protocol"])
    assert registry.policy_disabled() == ["guest-exec"]  # protocol cannot be disabled as a group
    with pytest.raises(ValueError):
        registry.configure(allow=None, block=[], blocked_groups=["nonsense"])


def test_frozen_gate(registry: Registry) -> None:
    registry.frozen = True
    enabled = {c["name"]: c["enabled"] for c in registry.info()}
    assert enabled == {"x-ext": False, "guest-exec": False, "guest-get-time": False,
                       "guest-ping": True, "guest-sync": True}
    assert registry.policy_disabled() == []  # frozen mode is not policy


def test_real_registry_is_consistent() -> None:
    registry = Registry()
    for name, cmd in registry.commands.items():
        assert cmd.group in GROUPS
        if name in SCHEMA_ORDER:
            assert name != "guest-get-devices", "Windows-only command registered on Linux"
    assert FROZEN_SAFE <= set(registry.commands) | {"guest-fsfreeze-status", "guest-fsfreeze-thaw"}
