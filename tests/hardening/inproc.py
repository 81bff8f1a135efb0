"""The agent's parser and dispatcher in the test process, with a byte-collecting send().

Commands that change the guest (files, exec, freeze, power, accounts, ...)
keep their real argument validation but get a stub handler, so fuzzing
exercises the whole request path without side effects on this machine.
Read-only commands (``protocol`` and ``info`` groups) run for real.
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

from qga.config import Config
from qga.context import Context
from qga.dispatch import Dispatcher
from qga.codec import JsonStreamParser, Reply
from qga.loop import Loop
from qga.command import Command, start_hooks
from qga.commands import load
from qga.registry import Registry
from qga.state import StateDir

#: Groups whose handlers really run in-process.
REAL_GROUPS = frozenset({"protocol", "info"})


def _stub(ctx: Context, **kwargs: Any) -> Dict[str, Any]:
    return {}


def safe_commands() -> List[Command]:
    """Every declared command; side-effecting handlers replaced by a stub."""
    return [cmd if cmd.group in REAL_GROUPS else cmd.replace(func=_stub)
            for cmd in load()]


def arg_members(cmd: Command) -> List[str]:
    """Wire names of a command's arguments (read from its compiled validator)."""
    for cell in getattr(cmd.validate, "__closure__", None) or ():
        contents = cell.cell_contents
        if isinstance(contents, list) and all(isinstance(m, tuple) and len(m) == 3 for m in contents):
            return [m[0] for m in contents]
    return []


class InProcessAgent:
    """JsonStreamParser + Dispatcher + a real Context; replies collected as bytes."""

    def __init__(self, statedir: str, deadline: float = 5.0,
                 blocked_groups: Optional[List[str]] = None) -> None:
        self.config = Config(method="unix-listen", path=statedir + "/sock", statedir=statedir)
        self.state = StateDir(statedir)
        self.state.load()
        self.loop = Loop()
        self.registry = Registry(safe_commands())
        self.registry.configure(None, [], blocked_groups or [])
        self.ctx = Context(self.config, self.state, self.loop, self.registry)
        for hook in start_hooks():
            hook(self.ctx)
        self.parser = JsonStreamParser()
        self.sent: List[bytes] = []
        self.dispatcher = Dispatcher(self.ctx, self._send, deadline)

    def _send(self, reply: Reply) -> None:
        # A big reply comes in pieces (sent with writev); the wire has them joined.
        self.sent.append(reply if type(reply) is bytes else b"".join(reply))

    def feed(self, data: bytes, timeout: float = 30.0) -> None:
        """Feed bytes as the channel would, then run the loop until the queue drains."""
        self.dispatcher.submit(self.parser.feed(data))
        self.drain(timeout)

    def drain(self, timeout: float = 30.0) -> None:
        """Run the loop until no request is waiting or running."""
        if not self.dispatcher.backlog:
            return
        limit = time.monotonic() + timeout

        def check() -> None:
            if not self.dispatcher.backlog or time.monotonic() > limit:
                self.loop.stop()
            else:
                self.loop.call_later(0.001, check)

        self.loop.call_later(0, check)
        self.loop.run()
        assert not self.dispatcher.backlog, "dispatcher did not drain"

    def take(self) -> List[bytes]:
        """Replies sent since the last call."""
        out, self.sent[:] = list(self.sent), []
        return out

    def close(self) -> None:
        """Stop the worker and release the loop."""
        self.ctx.run_shutdown_hooks()
        self.dispatcher.worker.stop()
        self.loop.close()
