"""The command policy: which declared commands this agent registers and enables.

``available`` is evaluated once per command: a command that cannot work on
this guest is not registered at all (absent from guest-info, ``has not been
found``), as QEMU 10.2 builds it.  The policy (allow/block lists, disabled
groups, frozen mode) decides at call time whether a registered command is
enabled.  The declarations come from the caller, a list or a
:class:`CommandSource` (:class:`qga.commands.Catalog`, which imports a command
module when one of its commands is first looked up), so this module never
imports a command module.  Listing the commands (guest-info, ``-b help``)
takes every declaration, and so does a name no source knows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, FrozenSet, Iterable, List, Optional, Protocol, Set, Union, \
    runtime_checkable

from qga.command import GROUPS, Command
from qga.errors import CommandNotFound

if TYPE_CHECKING:
    from qga.config import Config


@runtime_checkable
class CommandSource(Protocol):
    """Declarations found one by one (:class:`qga.commands.Catalog`)."""

    def find(self, name: str) -> Optional[Command]:
        """The declaration of ``name``, or None."""

    def all(self) -> List[Command]:
        """Every declaration, in declaration order."""


class _Listed:
    """A :class:`CommandSource` over declarations given up front."""

    def __init__(self, declared: Iterable[Command]) -> None:
        self.commands = list(declared)

    def find(self, name: str) -> Optional[Command]:
        return next((c for c in self.commands if c.name == name), None)

    def all(self) -> List[Command]:
        return self.commands


def _registration_key(cmd: Command) -> float:
    return float("inf") if cmd.order is None else cmd.order


class Registry:
    """The commands available on this guest, and the policy that enables them."""

    def __init__(self, declared: Union[Iterable[Command], CommandSource], *, extensions: bool = False) -> None:
        """Register the ``declared`` commands that can work here, in qemu-ga's order.

        Extension commands are left out unless ``extensions`` is true.
        """
        self._source = declared if isinstance(declared, CommandSource) else _Listed(declared)
        self._extensions = extensions
        #: The registered commands looked up so far; all of them once ``_complete``.
        self._found: Dict[str, Command] = {}
        #: Names declared but not registered here (unavailable, extensions).
        self._absent: Set[str] = set()
        self._complete = False
        self.allow: Optional[Set[str]] = None
        self.block: Set[str] = set()
        self.blocked_groups: Set[str] = set()
        self._frozen = False

    @property
    def frozen(self) -> bool:
        """Frozen mode: written by its owner, :meth:`qga.context.Context.set_frozen`."""
        return self._frozen

    @frozen.setter
    def frozen(self, frozen: bool) -> None:
        if frozen:
            # Take every declaration first: importing a module while frozen
            # could block writing its bytecode cache on a frozen filesystem.
            self.commands  # noqa: B018
        self._frozen = frozen

    @classmethod
    def from_config(cls, config: "Config", declared: Union[Iterable[Command], CommandSource]) -> "Registry":
        """The ``declared`` commands, with ``config``'s extensions and policy applied."""
        registry = cls(declared, extensions=config.extension_commands)
        registry.configure(config.allow_rpcs, config.block_rpcs, config.block_groups)
        return registry

    def _usable(self, cmd: Command) -> bool:
        return (self._extensions or not cmd.extension) and cmd.available()

    @property
    def commands(self) -> Dict[str, Command]:
        """Every registered command, in registration order (takes every declaration)."""
        if not self._complete:
            usable = [c for c in self._source.all() if c.name in self._found
                      or (c.name not in self._absent and self._usable(c))]
            # Stable sort: extensions keep their declaration order after the schema's.
            usable.sort(key=_registration_key)
            self._found = {c.name: c for c in usable}
            self._complete = True
        return self._found

    @property
    def frozen_safe(self) -> FrozenSet[str]:
        """The names enabled while frozen whatever the lists say (declared per command)."""
        return frozenset(n for n, c in self.commands.items() if c.frozen_safe)

    def _find(self, name: str) -> Optional[Command]:
        """The registered command ``name``, taking only its declaration if the source can."""
        if self._complete or name in self._absent:
            return None
        cmd = self._source.find(name)
        if cmd is None:  # a name the source cannot place: every declaration decides
            return self.commands.get(name)
        if not self._usable(cmd):
            self._absent.add(name)
            return None
        self._found[name] = cmd
        return cmd

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
        if self._frozen:
            return cmd.frozen_safe
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
        cmd = self._found.get(name) or self._find(name)
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
