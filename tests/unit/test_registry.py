"""The registry: schema order, policy, groups and the frozen gate."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qga.errors import CommandNotFound
from qga.registry import FROZEN_SAFE, GROUPS, SCHEMA_ORDER, Command, Registry, command
from qga.schema import compile_args


REPO = Path(__file__).resolve().parents[2]
#: qemu-ga 10.2's Linux commands in registration order (from the project's spec).
QEMU_10_2 = json.loads((REPO / "tests/data/qemu/commands-10.2-linux.json").read_text())["commands"]


def make(name: str, group: str = "info", available: bool = True, extension: bool = False) -> Command:
    return Command(name=name, func=lambda ctx: None, group=group, validate=compile_args(None),
                   available=lambda: available, extension=extension)


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


def test_frozen_gate_overrides_block_allow_and_groups(registry: Registry) -> None:
    """qemu-ga 10.2: while frozen the freeze-safe set is enabled whatever the lists say."""
    registry.configure(allow=["guest-get-time"], block=["guest-ping", "guest-sync"],
                       blocked_groups=["info"])
    assert registry.policy_disabled() == ["guest-sync", "guest-ping", "guest-get-time", "guest-exec",
                                          "x-ext"]
    registry.frozen = True
    enabled = {c["name"]: c["enabled"] for c in registry.info()}
    assert enabled == {"x-ext": False, "guest-exec": False, "guest-get-time": False,
                       "guest-ping": True, "guest-sync": True}
    assert registry.lookup("guest-ping").name == "guest-ping"
    registry.frozen = False  # thawed: the lists apply again
    with pytest.raises(CommandNotFound, match="^Command guest-ping has been disabled"):
        registry.lookup("guest-ping")


@pytest.mark.parametrize("allow", [[], None])
def test_empty_allow_list_is_no_allow_list(registry: Registry, allow: object) -> None:
    registry.configure(allow=allow, block=["guest-exec"])  # type: ignore[arg-type]
    assert registry.policy_disabled() == ["guest-exec"]


def test_extension_commands_are_registered_only_when_enabled() -> None:
    declared = [make("guest-ping", "protocol"), make("x-ext", "unrestricted", extension=True)]
    assert Registry(declared).names() == ["guest-ping"]
    assert Registry(declared, extensions=True).names() == ["guest-ping", "x-ext"]
    with pytest.raises(ValueError, match="named x-"):
        command("x-unflagged", group="info")
    with pytest.raises(ValueError, match="named x-"):
        command("guest-flagged", group="info", extension=True)


def test_stock_registry_is_exactly_qemu_10_2s_linux_commands() -> None:
    assert Registry().names() == QEMU_10_2
    assert [c["name"] for c in Registry().info()] == QEMU_10_2[::-1]
    assert Registry(extensions=True).names() == QEMU_10_2 + ["x-guest-exec-kill"]


@pytest.mark.parametrize("option", ["-b", "-a"])
def test_help_lists_exactly_qemu_10_2s_commands(option: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "QGA_CONF": "/nonexistent"}
    stock = subprocess.run([sys.executable, "-m", "qga", option, "help"], capture_output=True,
                           text=True, env=env, timeout=30)
    assert (stock.returncode, stock.stdout) == (0, "\n".join(QEMU_10_2) + "\n")
    extended = subprocess.run([sys.executable, "-m", "qga", "--extension-commands", option, "help"],
                              capture_output=True, text=True, env=env, timeout=30)
    assert extended.stdout.splitlines() == QEMU_10_2 + ["x-guest-exec-kill"]


def test_real_registry_is_consistent() -> None:
    registry = Registry()
    for name, cmd in registry.commands.items():
        assert cmd.group in GROUPS
        if name in SCHEMA_ORDER:
            assert name != "guest-get-devices", "Windows-only command registered on Linux"
    assert FROZEN_SAFE <= set(registry.commands) | {"guest-fsfreeze-status", "guest-fsfreeze-thaw"}


def test_empty_allow_rpcs_from_the_command_line_and_the_file(tmp_path: Path) -> None:
    """``-a ''`` and ``allow-rpcs=`` mean no allow-list (qemu-ga 10.2), not "allow nothing"."""
    from qga.cli import build_config, build_parser

    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\nallow-rpcs=\n")
    for argv in (["-a", ""], ["-c", str(conf)], ["-c", str(conf), "-a", "", "-b", "guest-exec"]):
        registry = Registry.from_config(build_config(build_parser().parse_args(argv)))
        assert registry.policy_disabled() == (["guest-exec"] if "-b" in argv else []), argv
