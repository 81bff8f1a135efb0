"""The command registry: one decorated function per command.

A command module declares each command next to its handler::

    @command("guest-file-read", group="unrestricted",
             args={"handle": "int", "*count": "int"})
    def file_read(ctx: Context, handle: int, count: int = 4096) -> dict: ...

Nothing else has to change to add a command.  ``available`` is evaluated once
when the registry is built: a command that cannot work on this guest is not
registered at all (absent from guest-info, ``has not been found``), as QEMU
10.2 builds it.  The policy (allow/block lists, disabled groups, frozen mode)
decides at call time whether a registered command is enabled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, Optional, Set

from qga.errors import CommandNotFound
from qga.schema import TypeSpec, Validator, compile_args

if TYPE_CHECKING:
    from qga.config import Config

#: Command groups an administrator can disable as a whole.  Every command
#: belongs to exactly one, so a command added by a later release joins a group
#: and an upgrade cannot silently widen what the host may do.
GROUPS: Mapping[str, str] = {
    "protocol": "guest-sync, guest-sync-delimited, guest-ping, guest-info (cannot be disabled as a group)",
    "info": "read-only queries of the guest's state",
    "unrestricted": "guest-file-* and guest-exec*: arbitrary file access and command execution as root",
    "user-auth": "guest-set-user-password and guest-ssh-*: account credentials",
    "system-control": "shutdown, suspend, set-time, set-vcpus, set-memory-blocks",
    "fsfreeze": "guest-fsfreeze-* and guest-fstrim",
}

#: Commands that work while filesystems are frozen (QEMU's fixed list).
FROZEN_SAFE: FrozenSet[str] = frozenset({
    "guest-ping", "guest-info", "guest-sync", "guest-sync-delimited",
    "guest-fsfreeze-status", "guest-fsfreeze-thaw",
})

#: QEMU 10.2 schema order.  guest-info lists commands in reverse registration
#: order, which qemu-ga derives from this order; commands not listed here (our
#: extensions) count as registered after these, in import order.
SCHEMA_ORDER = (
    "guest-sync-delimited", "guest-sync", "guest-ping", "guest-get-time",
    "guest-set-time", "guest-info", "guest-shutdown", "guest-file-open",
    "guest-file-close", "guest-file-read", "guest-file-write", "guest-file-seek",
    "guest-file-flush", "guest-fsfreeze-status", "guest-fsfreeze-freeze",
    "guest-fsfreeze-freeze-list", "guest-fsfreeze-thaw", "guest-fstrim",
    "guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid",
    "guest-network-get-interfaces", "guest-get-vcpus", "guest-set-vcpus",
    "guest-get-disks", "guest-get-fsinfo", "guest-set-user-password",
    "guest-get-memory-blocks", "guest-set-memory-blocks",
    "guest-get-memory-block-info", "guest-exec-status", "guest-exec",
    "guest-get-host-name", "guest-get-users", "guest-get-timezone",
    "guest-get-osinfo", "guest-get-devices", "guest-ssh-get-authorized-keys",
    "guest-ssh-add-authorized-keys", "guest-ssh-remove-authorized-keys",
    "guest-get-diskstats", "guest-get-cpustats", "guest-get-load",
    "guest-network-get-route",
)

#: Seconds a command may run in the worker before the host gets an error and
#: later requests are served.  Freeze and thaw have none: abandoning them half
#: way would leave the guest in an unknown state (see README).
DEFAULT_DEADLINE = 60.0


@dataclass(frozen=True)
class Command:
    """Everything the dispatcher needs to know about one command."""

    name: str
    func: Callable[..., Any]
    group: str
    validate: Validator
    success_response: bool = True
    #: Runs on the event-loop thread: must never block (no file system or
    #: child-process waits).  Everything else runs in the worker thread.
    inline: bool = False
    #: Seconds before the worker is abandoned; None means no deadline.
    deadline: Optional[float] = DEFAULT_DEADLINE
    #: Raw bytes written before this command's successful reply (0xFF for
    #: guest-sync-delimited).
    reply_prefix: bytes = b""
    #: Logged to the audit log (side-effecting commands).
    audit: bool = False
    #: A qemu-ga-py extension (``x-`` name): registered only when the guest's
    #: administrator enables ``extension-commands``, so a stock agent lists
    #: exactly qemu-ga's commands.
    extension: bool = False
    available: Callable[[], bool] = field(default=lambda: True, compare=False)


_DECLARED: Dict[str, Command] = {}


def command(name: str, *, group: str, args: Optional[Mapping[str, TypeSpec]] = None,
            success_response: bool = True, inline: bool = False,
            deadline: Optional[float] = DEFAULT_DEADLINE, reply_prefix: bytes = b"",
            audit: bool = False, extension: bool = False,
            available: Optional[Callable[[], bool]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a command.  The handler is called as ``func(ctx, **arguments)``.

    ``args`` uses QAPI notation (see :mod:`qga.schema`); argument names with a
    dash arrive with an underscore (``buf-b64`` -> ``buf_b64``).  The handler
    returns the JSON-able ``return`` value (``None`` means ``{}``) or raises
    :class:`qga.errors.QgaError`.
    """
    if group not in GROUPS:
        raise ValueError(f"{name}: unknown group {group!r}")
    if extension != name.startswith("x-"):
        raise ValueError(f"{name}: extension commands, and only they, are named x-...")

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in _DECLARED:
            raise RuntimeError(f"duplicate command {name}")
        _DECLARED[name] = Command(
            name=name, func=func, group=group, validate=compile_args(args),
            success_response=success_response, inline=inline, deadline=deadline,
            reply_prefix=reply_prefix, audit=audit, extension=extension,
            available=available or (lambda: True))
        return func

    return wrap


def load_command_modules() -> None:
    """Import every command module so that its decorators run."""
    from qga import commands  # noqa: F401  (the package imports its modules)


def _registration_key(name: str) -> int:
    try:
        return SCHEMA_ORDER.index(name)
    except ValueError:
        return len(SCHEMA_ORDER)


class Registry:
    """The commands available on this guest, and the policy that enables them."""

    def __init__(self, declared: Optional[Iterable[Command]] = None, *,
                 extensions: bool = False) -> None:
        """Register ``declared`` (default: every command module's commands).

        Extension commands are left out unless ``extensions`` is true.
        """
        if declared is None:
            load_command_modules()
            declared = list(_DECLARED.values())
        usable = [c for c in declared if c.available() and (extensions or not c.extension)]
        # Stable sort: extensions keep their declaration order after the schema's.
        usable.sort(key=lambda c: _registration_key(c.name))
        self.commands: Dict[str, Command] = {c.name: c for c in usable}
        self.allow: Optional[Set[str]] = None
        self.block: Set[str] = set()
        self.blocked_groups: Set[str] = set()
        self.frozen = False

    @classmethod
    def from_config(cls, config: "Config") -> "Registry":
        """Every command module's commands, with ``config``'s policy applied."""
        registry = cls(extensions=config.extension_commands)
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
            return cmd.name in FROZEN_SAFE
        if self.allow is not None and cmd.name not in self.allow:
            return False
        if cmd.name in self.block:
            return False
        return not (cmd.group in self.blocked_groups and cmd.group != "protocol")

    def policy_disabled(self) -> List[str]:
        """Names disabled by the admin policy (not counting frozen mode)."""
        frozen, self.frozen = self.frozen, False
        try:
            return [n for n, c in self.commands.items() if not self.is_enabled(c)]
        finally:
            self.frozen = frozen

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
