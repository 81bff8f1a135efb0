"""The command policy: which declared commands this agent registers and enables.

``available`` is evaluated once when the registry is built: a command that
cannot work on this guest is not registered at all (absent from guest-info,
``has not been found``), as QEMU 10.2 builds it.  The policy (allow/block
lists, disabled groups, frozen mode) decides at call time whether a
registered command is enabled.  The declarations come from the caller
(:func:`qga.commands.load`), so this module never imports a command module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Iterable, List, Optional, Set

from qga.command import GROUPS, Command
from qga.errors import CommandNotFound

if TYPE_CHECKING:
    from qga.config import Config


def _registration_key(cmd: Command) -> float:
    return float("inf") if cmd.order is None else cmd.order


class Registry:
    """The commands available on this guest, and the policy that enables them."""

    def __init__(self, declared: Iterable[Command], *, extensions: bool = False) -> None:
        """Register the ``declared`` commands that can work here, in qemu-ga's order.

        Extension commands are left out unless ``extensions`` is true.
        """
        usable = [c for c in declared if c.available() and (extensions or not c.extension)]
        # Stable sort: extensions keep their declaration order after the schema's.
        usable.sort(key=_registration_key)
        self.commands: Dict[str, Command] = {c.name: c for c in usable}
        #: Enabled while frozen whatever the lists say (declared per command).
        self.frozen_safe: FrozenSet[str] = frozenset(c.name for c in usable if c.frozen_safe)
        self.allow: Optional[Set[str]] = None
        self.block: Set[str] = set()
        self.blocked_groups: Set[str] = set()
        #: Frozen mode: written by its owner, :meth:`qga.context.Context.set_frozen`.
        self.frozen = False

    @classmethod
    def from_config(cls, config: "Config", declared: Iterable[Command]) -> "Registry":
        """The ``declared`` commands, with ``config``'s extensions and policy applied."""
        registry = cls(declared, extensions=config.extension_commands)
        registry.configure(config.allow_rpcs, config.block_rpcs, config.block_groups)
        return registry

    def names(self) -> List[str]:
        """Command names in registration order (``-b help`` prints this)."""
        return list(self.commands)

    def configure(self, allow: Optional[Iterable[str]], block: Iterable[str],
                  blocked_groups: Iterable[str] = ()) -> None:
        """Set the admin policy.  Unknown names are ignored, as qemu-ga does.

        An empty allow-list (``-a ''``, ``allow-rpcs=``) is no allow-list, as
        in qemu-ga 10.2.
        """
        allowed = set(allow or ())
        self.allow = allowed or None
        self.block = set(block)
        bad = set(blocked_groups) - set(GROUPS)
        if bad:
            raise ValueError("unknown command group(s): " + ", ".join(sorted(bad)))
        self.blocked_groups = set(blocked_groups)

    def is_enabled(self, cmd: Command) -> bool:
        """The frozen gate overrides everything; else allow-list, block-list, groups.

        While frozen, exactly the freeze-safe commands are enabled whatever the
        lists say (qemu-ga 10.2), so the host can always see and end a freeze.
        """
        if self.frozen:
            return cmd.name in self.frozen_safe
        return self._allowed(cmd)

    def _allowed(self, cmd: Command) -> bool:
        if self.allow is not None and cmd.name not in self.allow:
            return False
        if cmd.name in self.block:
            return False
        return not (cmd.group in self.blocked_groups and cmd.group != "protocol")

    def policy_disabled(self) -> List[str]:
        """Names disabled by the admin policy (not counting frozen mode)."""
        return [n for n, c in self.commands.items() if not self._allowed(c)]

    def lookup(self, name: str) -> Command:
        """The command, or ``CommandNotFound`` with qemu-ga 10.2's texts."""
        cmd = self.commands.get(name)
        if cmd is None:
            raise CommandNotFound(f"The command {name} has not been found")
        if not self.is_enabled(cmd):
            raise CommandNotFound(f"Command {name} has been disabled: the command is not allowed")
        return cmd

    def info(self) -> List[Dict[str, Any]]:
        """guest-info's ``supported_commands``: reverse registration order."""
        return [{"enabled": self.is_enabled(c), "name": c.name,
                 "success-response": c.success_response}
                for c in reversed(list(self.commands.values()))]
