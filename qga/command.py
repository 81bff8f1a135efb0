"""Command declarations: one decorated function per command, declaring all of it.

A command module declares each command next to its handler::

    @command("guest-file-read", order=10, group="unrestricted",
             args={"handle": "int", "*count": "int"})
    def file_read(ctx: Context, handle: int, count: int = 4096) -> dict: ...

The decorator records everything the agent needs to know: the argument
schema, the group an administrator can disable, inline or worker, the
deadline, whether it is allowed while frozen, whether it is audited and which
arguments its audit record may show, its position in qemu-ga's registration
order and whether it can work on this guest.  Nothing else has to change to
add a command.  This module is a leaf: it imports no other part of the agent
but the argument schema and the errors.
"""
from __future__ import annotations

import enum
from typing import Any, Callable, Dict, Final, List, Literal, Mapping, Optional, Sequence, Tuple, Union

from qga.schema import TypeSpec, Validator, compile_args

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


class _CommandTimeout(enum.Enum):
    """The ``deadline`` of a command that takes the agent's ``--command-timeout``.

    An enum member, so that ``deadline is COMMAND_TIMEOUT`` narrows the type.
    """

    COMMAND_TIMEOUT = "COMMAND_TIMEOUT"

    def __repr__(self) -> str:
        return "COMMAND_TIMEOUT"


#: The default deadline: whatever ``--command-timeout`` says (60 s unless set).
COMMAND_TIMEOUT: Final = _CommandTimeout.COMMAND_TIMEOUT

Deadline = Union[float, None, Literal[_CommandTimeout.COMMAND_TIMEOUT]]


def _always() -> bool:
    return True


class Command:
    """Everything the dispatcher and the policy need to know about one command.

    Treated as immutable once declared; :meth:`replace` makes a variant.  A
    plain class, not a dataclass: the ``dataclasses`` module costs the
    agent's start-up more than the whole command layer.
    """

    __slots__ = ("name", "func", "group", "validate", "args", "order", "success_response", "inline",
                 "deadline", "reply_prefix", "frozen_safe", "audit", "audit_args", "extension", "available")

    def __init__(self, *, name: str, func: Callable[..., Any], group: str, validate: Validator,
                 args: Optional[Mapping[str, TypeSpec]] = None, order: Optional[int] = None,
                 success_response: bool = True, inline: bool = False, deadline: Deadline = COMMAND_TIMEOUT,
                 reply_prefix: bytes = b"", frozen_safe: bool = False, audit: bool = False,
                 audit_args: Tuple[str, ...] = (), extension: bool = False,
                 available: Callable[[], bool] = _always) -> None:
        self.name = name
        self.func = func
        self.group = group
        self.validate = validate
        #: The argument schema as declared (QAPI notation, ``*`` marks optional).
        self.args: Mapping[str, TypeSpec] = {} if args is None else args
        #: Sort key of qemu-ga's registration order (its schema's order), which
        #: guest-info reverses; None for our extensions, registered after.
        self.order = order
        self.success_response = success_response
        #: Runs on the event-loop thread: must never block (no file system or
        #: child-process waits).  Everything else runs in the worker thread.
        self.inline = inline
        #: Seconds before the worker is abandoned; None means no deadline.
        self.deadline = deadline
        #: Raw bytes written before this command's successful reply (0xFF for
        #: guest-sync-delimited).
        self.reply_prefix = reply_prefix
        #: Enabled while filesystems are frozen, whatever the lists say (qemu-ga's
        #: fixed set: the host must always be able to see and end a freeze).
        self.frozen_safe = frozen_safe
        #: Logged to the audit log (side-effecting commands) ...
        self.audit = audit
        #: ... with these arguments (handler keyword names); the others are
        #: withheld (file data, passwords, keys, environment).
        self.audit_args = audit_args
        #: A qemu-ga-py extension (``x-`` name): registered only when the guest's
        #: administrator enables ``extension-commands``, so a stock agent lists
        #: exactly qemu-ga's commands.
        self.extension = extension
        self.available = available

    def replace(self, **changes: Any) -> "Command":
        """A copy with ``changes`` (keyword names as for the constructor)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Command(**fields)

    def __repr__(self) -> str:
        return f"Command({self.name!r})"


_DECLARED: Dict[str, Command] = {}
_START_HOOKS: List[Callable[[Any], None]] = []


def command(name: str, *, group: str, order: Optional[int] = None,
            args: Optional[Mapping[str, TypeSpec]] = None, success_response: bool = True,
            inline: bool = False, deadline: Deadline = COMMAND_TIMEOUT, reply_prefix: bytes = b"",
            frozen_safe: bool = False, audit: Union[bool, Sequence[str]] = False,
            available: Optional[Callable[[], bool]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a command.  The handler is called as ``func(ctx, **arguments)``.

    ``args`` uses QAPI notation (see :mod:`qga.schema`); argument names with a
    dash arrive with an underscore (``buf-b64`` -> ``buf_b64``).  ``order``
    is the command's position in QEMU's schema (required unless the name
    starts with ``x-``, our extensions).  ``audit`` is False, True (audited,
    no argument shown) or the wire names of the arguments its record shows.
    The handler returns the JSON-able ``return`` value (``None`` means
    ``{}``) or raises :class:`qga.errors.QgaError`.
    """
    extension = name.startswith("x-")
    if group not in GROUPS:
        raise ValueError(f"{name}: unknown group {group!r}")
    if (order is None) != extension:
        raise ValueError(f"{name}: qemu-ga's commands declare their schema order, x- extensions do not")
    shown: Tuple[str, ...] = () if isinstance(audit, bool) else tuple(audit)
    wire = {n.lstrip("*") for n in (args or {})}
    if set(shown) - wire:
        raise ValueError(f"{name}: audits unknown arguments {sorted(set(shown) - wire)}")

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        if name in _DECLARED:
            raise RuntimeError(f"duplicate command {name}")
        _DECLARED[name] = Command(
            name=name, func=func, group=group, validate=compile_args(args), args=dict(args or {}),
            order=order,
            success_response=success_response, inline=inline, deadline=deadline,
            reply_prefix=reply_prefix, frozen_safe=frozen_safe, audit=bool(audit),
            audit_args=tuple(a.replace("-", "_") for a in shown), extension=extension,
            available=available or _always)
        return func

    return wrap


def declared() -> List[Command]:
    """Every command declared so far, in declaration order."""
    return list(_DECLARED.values())


def declaration(name: str) -> Optional[Command]:
    """The command declared as ``name`` so far, if any."""
    return _DECLARED.get(name)


def on_agent_start(func: Callable[[Any], None]) -> Callable[[Any], None]:
    """Declare ``func(ctx)``, run once for each agent, when its context is ready.

    A subject module uses it for per-agent duties beyond its commands (the
    freeze module's thaw on the way out, for instance).  The agent imports a
    command module when first needed (:class:`qga.commands.Catalog`): the
    hooks of a module imported later run then.
    """
    _START_HOOKS.append(func)
    return func


def start_hooks() -> List[Callable[[Any], None]]:
    """The functions declared with :func:`on_agent_start`, in declaration order."""
    return list(_START_HOOKS)
