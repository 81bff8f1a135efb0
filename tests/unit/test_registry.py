"""The registry: schema order, policy, groups and the frozen gate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qga.errors import CommandNotFound
from qga.command import GROUPS, Command, command
from qga.commands import load
from qga.registry import Registry
from qga.schema import compile_args
from tests.qemu_schema import COMMANDS, LINUX_NAMES as QEMU_10_2


REPO = Path(__file__).resolve().parents[2]


ORDER = {c["name"]: i for i, c in enumerate(COMMANDS, 1)}


def make(name: str, group: str = "info", available: bool = True, extension: bool = False) -> Command:
    return Command(name=name, func=lambda ctx: None, group=group, validate=compile_args(None),
                   order=ORDER.get(name), available=lambda: available, extension=extension,
                   frozen_safe=name in ("guest-ping", "guest-sync"))


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
    with pytest.raises(ValueError, match="x- extensions do not"):
        command("x-ordered", order=3, group="info")
    with pytest.raises(ValueError, match="declare their schema order"):
        command("guest-unordered", group="info")


def test_stock_registry_is_exactly_qemu_10_2s_linux_commands() -> None:
    assert Registry(load()).names() == QEMU_10_2
    assert [c["name"] for c in Registry(load()).info()] == QEMU_10_2[::-1]
    assert Registry(load(), extensions=True).names() == QEMU_10_2 + ["x-guest-exec-kill"]


@pytest.mark.parametrize("option", ["-b", "-a"])
def test_help_lists_exactly_qemu_10_2s_commands(option: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "QGA_CONF": "/nonexistent"}
    stock = subprocess.run([sys.executable, "-m", "qga", option, "help"], capture_output=True,
                           text=True, env=env, timeout=30)
    assert (stock.returncode, stock.stdout) == (0, "\n".join(QEMU_10_2) + "\n")
    extended = subprocess.run([sys.executable, "-m", "qga", "--extension-commands", option, "help"],
                              capture_output=True, text=True, env=env, timeout=30)
    assert extended.stdout.splitlines() == QEMU_10_2 + ["x-guest-exec-kill"]


def test_declarations_agree_with_qemu_10_2s_schema() -> None:
    """What each command declares (order, arguments, frozen safety, success-response) is
    what the 10.2 schema says; a command that lacks it, or disagrees, fails here."""
    spec = {c["name"]: c for c in COMMANDS}
    for cmd in load():
        assert cmd.group in GROUPS, cmd.name
        if cmd.extension:
            assert cmd.order is None and cmd.name.startswith("x-")
            continue
        entry = spec[cmd.name]
        assert cmd.order == ORDER[cmd.name], cmd.name
        assert entry["on-linux"], f"{cmd.name} is not built on Linux"
        assert cmd.frozen_safe == entry["allowed-while-frozen"], cmd.name
        assert cmd.success_response == entry["success-response"], cmd.name
        ours = {name.lstrip("*"): name.startswith("*") for name in cmd.args
                if not name.lstrip("*").startswith("x-")}  # argument extensions: next test
        theirs = {a["name"]: a["optional"] for a in entry["args"]}
        assert ours == theirs, cmd.name
        assert set(cmd.audit_args) <= {n.lstrip("*").replace("-", "_") for n in cmd.args}, cmd.name
        if cmd.audit_args:
            assert cmd.audit, cmd.name


def test_argument_extensions_are_declared_as_such() -> None:
    """Arguments beyond 10.2's are x- names (invisible unless used)."""
    spec = {c["name"]: {a["name"] for a in c["args"]} for c in COMMANDS}
    extra = {(c.name, a.lstrip("*")) for c in load() if not c.extension
             for a in c.args if a.lstrip("*") not in spec[c.name]}
    assert extra == {("guest-exec", "x-timeout")}


def test_empty_allow_rpcs_from_the_command_line_and_the_file(tmp_path: Path) -> None:
    """``-a ''`` and ``allow-rpcs=`` mean no allow-list (qemu-ga 10.2), not "allow nothing"."""
    from qga.cli import build_config, build_parser

    conf = tmp_path / "qga.conf"
    conf.write_text("[general]\nallow-rpcs=\n")
    for argv in (["-a", ""], ["-c", str(conf)], ["-c", str(conf), "-a", "", "-b", "guest-exec"]):
        registry = Registry.from_config(build_config(build_parser().parse_args(argv)), load())
        assert registry.policy_disabled() == (["guest-exec"] if "-b" in argv else []), argv


def test_freeze_and_thaw_have_no_deadline_sync_ping_info_run_inline() -> None:
    """README: abandoning a freeze or thaw half way would leave the guest in an unknown state, so
    they have no deadline; guest-sync/-ping/-info never wait for the worker (the loop runs them)."""
    decl = {c.name: c for c in load()}
    for name in ("guest-fsfreeze-freeze", "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw"):
        assert decl[name].deadline is None and not decl[name].inline, name
    assert sorted(n for n in ("guest-sync", "guest-sync-delimited", "guest-ping", "guest-info")
                  if decl[n].inline) == ["guest-info", "guest-ping", "guest-sync", "guest-sync-delimited"]
