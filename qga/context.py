"""What a command handler may use of the running agent.

Handlers receive a :class:`Context` as their first argument.  Per-subject
state (open guest files, exec records, the freeze deadline) lives in
``ctx.store(key, factory)`` so that the core never needs to know about a
subject, and a new command module needs no change elsewhere.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, TypeVar

from qga.loop import Loop
from qga.registry import Registry
from qga.state import StateDir

T = TypeVar("T")

audit_log = logging.getLogger("qga.audit")

#: Per thread: while the dispatcher runs an ``audit=True`` command, its
#: ``fields`` dict collects what the handler passes to :meth:`Context.audit`,
#: so the command yields one record (written by the dispatcher with the
#: arguments and the result).  ``None`` outside such a command.
AUDIT_SCOPE = threading.local()

#: Called with every new :class:`Context`: subject modules append a function
#: here at import time to register per-agent hooks (e.g. thaw on shutdown).
CONTEXT_HOOKS: List[Callable[["Context"], None]] = []


class Context:
    """The agent's services for handlers: config, state, loop and registry."""

    def __init__(self, config: Any, state: StateDir, loop: Loop, registry: Registry) -> None:
        self.config = config
        self.state = state
        self.loop = loop
        self.registry = registry
        self._stores: Dict[str, Any] = {}
        self._store_lock = threading.Lock()
        self._shutdown_hooks: List[Callable[[], None]] = []
        #: Called with (frozen: bool) after the frozen state changes (logging gate, sd_notify).
        self.frozen_listeners: List[Callable[[bool], None]] = []
        for hook in CONTEXT_HOOKS:
            hook(self)

    def store(self, key: str, factory: Callable[[], T]) -> T:
        """The subject state stored under ``key``, created on first use."""
        with self._store_lock:
            if key not in self._stores:
                self._stores[key] = factory()
            state: T = self._stores[key]
            return state

    def on_shutdown(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` when the agent stops (before the channel closes)."""
        self._shutdown_hooks.append(hook)

    def run_shutdown_hooks(self) -> None:
        """Called once by the agent on its way out; a failing hook is logged."""
        for hook in reversed(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                logging.getLogger("qga").exception("shutdown hook %r failed", hook)

    @property
    def frozen(self) -> bool:
        """True while filesystems are frozen by this agent (or a previous one)."""
        return self.registry.frozen

    def set_frozen(self, frozen: bool) -> None:
        """Enter or leave frozen mode.

        Entering creates the ``qga.state.isfrozen`` marker *before* the caller
        issues any FIFREEZE, then gates commands and logging; leaving does the
        reverse after the thaw.
        """
        if frozen:
            self.state.create_frozen_marker()
            self.registry.frozen = True
        else:
            self.registry.frozen = False
            self.state.remove_frozen_marker()
        for listener in self.frozen_listeners:
            listener(frozen)

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
