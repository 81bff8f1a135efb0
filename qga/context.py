"""What a command handler may use of the running agent.

Handlers receive a :class:`Context` as their first argument.  Per-subject
state (open guest files, exec records, the freeze state) is one object of the
subject's own class, ``ctx.subject(FreezeState)``, so that the core never
needs to know about a subject, and a new command module needs no change
elsewhere.  The context is the one owner of frozen mode.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Type, TypeVar

from qga.config import Config
from qga.loop import Loop
from qga.state import StateDir
from qga.log import get_logger

if TYPE_CHECKING:
    from qga.log import FrozenGate
    from qga.registry import Registry

T = TypeVar("T")

audit_log = get_logger("qga.audit")

#: Per thread: while the dispatcher runs an ``audit=True`` command, its
#: ``fields`` dict collects what the handler passes to :meth:`Context.audit`,
#: so the command yields one record (written by the dispatcher with the
#: arguments and the result).  ``None`` outside such a command.
AUDIT_SCOPE = threading.local()


class Context:
    """The agent's services for handlers: config, state, loop and registry."""

    def __init__(self, config: Config, state: StateDir, loop: Loop, registry: "Registry",
                 log_gate: Optional["FrozenGate"] = None) -> None:
        """``log_gate`` holds log records back while frozen (the log file may be on a frozen disk)."""
        self.config = config
        self.state = state
        self.loop = loop
        self.registry = registry
        self.log_gate = log_gate
        self._subjects: Dict[type, Any] = {}
        self._subject_lock = threading.Lock()
        self._shutdown_hooks: List[Callable[[], None]] = []
        #: Called on the loop thread with (frozen: bool) after frozen mode changes
        #: (sd_notify status, the deferred pid file).
        self.frozen_listeners: List[Callable[[bool], None]] = []

    def subject(self, kind: Type[T], make: Optional[Callable[[], T]] = None) -> T:
        """The agent's one ``kind`` object, created on first use by ``make`` (default ``kind()``)."""
        found: Optional[T] = self._subjects.get(kind)  # never replaced once made: found without the lock
        if found is not None:
            return found
        with self._subject_lock:
            obj = self._subjects.get(kind)
            if obj is None:
                obj = self._subjects[kind] = (make or kind)()
            return obj

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` when the agent stops (before the channel closes)."""
        self._shutdown_hooks.append(hook)

    def run_shutdown_hooks(self) -> None:
        """Called once by the agent on its way out; a failing hook is logged."""
        for hook in reversed(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                get_logger("qga").exception("shutdown hook %r failed", hook)

    @property
    def frozen(self) -> bool:
        """True while filesystems are frozen by this agent (or a previous one)."""
        return self.registry.frozen

    def set_frozen(self, frozen: bool, *, marker: bool = True) -> None:
        """Enter or leave frozen mode (the only place that does).

        Entering creates the ``qga.state.isfrozen`` marker *before* the caller
        issues any FIFREEZE, then gates commands and logging; leaving does the
        reverse after the thaw.  ``marker=False``: a restarted agent found the
        marker a previous instance left.  The log gate closes here, in the
        calling thread, before any FIFREEZE; the listeners run on the loop
        thread, as this may be called from the worker or a timer.
        """
        if frozen:
            if marker:
                self.state.create_frozen_marker()
            self.registry.frozen = True
            if self.log_gate is not None:
                self.log_gate.set_frozen(True)
        else:
            self.registry.frozen = False
            self.state.remove_frozen_marker()
            if self.log_gate is not None:
                self.log_gate.set_frozen(False)
        for listener in self.frozen_listeners:
            self.loop.call_soon_threadsafe(listener, frozen)

    def audit(self, message: str, **fields: Any) -> None:
        """One audit record for a side-effecting command (never secrets or data).

        Inside a dispatched ``audit=True`` command the fields join that
        command's single record instead; elsewhere (timers, shutdown) the
        record is written at once.
        """
        scope = getattr(AUDIT_SCOPE, "fields", None)
        if scope is not None:
            scope.update(fields)
            return
        audit_log.info(message, extra={"qga_fields": fields})
