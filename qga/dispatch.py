"""From parsed JSON values to reply bytes, in request order.

Every parsed item is queued.  Items are started strictly one after another:
the request shape is checked (QEMU's texts and order), the command looked up
and gated *when it starts* (so a request behind a freeze sees frozen mode),
its arguments validated, then the handler runs — on the loop thread for
``inline`` commands, in the worker thread otherwise.  A worker command that
exceeds its deadline gets an error reply and is abandoned so later requests
are served; its late result is discarded.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from qga.context import AUDIT_SCOPE, Context, audit_log
from qga.errors import QgaError
from qga.codec import JsonParseError, JsonText, Reply, dump_pieces, dumps
from qga.codec.qdict import member_order
from qga.command import COMMAND_TIMEOUT, Command
from qga.worker import Worker
from qga.log import get_logger

log = get_logger(__name__)

_NO_ID = object()
_NO_ARGS: Dict[str, Any] = {}  # read only: validators never modify their input


def _encode_return(result: Any, rid: Any) -> Reply:
    """``{"return": RESULT[, "id": ID]}`` + newline, as :func:`dumps` writes it.

    QDict order puts "return" before "id"; the common shapes (no result, an
    empty list such as nobody logged in, a result written by its handler, an
    integer id) skip the general writer.
    """
    if result is None:
        value = b"{}"
    elif type(result) is list and not result:
        value = b"[]"
    elif type(result) is int:
        value = int.__repr__(result).encode()
    elif type(result) is JsonText:
        value = result.encode("ascii")
    else:  # one pass of the writer; a big result (file data) stays a piece of its own
        if rid is _NO_ID:
            return dump_pieces(result, '{"return": ', "}\n")
        rid_text = int.__repr__(rid) if type(rid) is int else dumps(rid)[:-1].decode("ascii")
        return dump_pieces(result, '{"return": ', ', "id": ' + rid_text + "}\n")
    if rid is _NO_ID:
        return b'{"return": ' + value + b"}\n"
    if type(rid) is int:
        return b'{"return": ' + value + b', "id": ' + int.__repr__(rid).encode() + b"}\n"
    return b'{"return": ' + value + b', "id": ' + dumps(rid)[:-1] + b"}\n"


def error_reply(err: QgaError, rid: Any = _NO_ID) -> bytes:
    """An error object, with the request id when it had one."""
    reply: Dict[str, Any] = {"error": err.to_wire()}
    if rid is not _NO_ID:
        reply["id"] = rid
    return dumps(reply)


def check_request(item: Any) -> Tuple[str, Dict[str, Any], Any]:
    """(command name, arguments, id) of a request object, or QgaError."""
    if type(item) is dict:
        # Fast path for a well-formed request: with no error to report, the
        # order in which members are checked does not matter.
        name = item.get("execute")
        arguments = item.get("arguments", _NO_ARGS)
        if type(name) is str and type(arguments) is dict and \
                len(item) == 1 + ("arguments" in item) + ("id" in item):
            return name, arguments, item.get("id", _NO_ID)
    if not isinstance(item, dict):
        raise QgaError("QMP input must be a JSON object")
    for key in member_order(list(item)):
        value = item[key]
        if key == "execute":
            if not isinstance(value, str):
                raise QgaError("QMP input member 'execute' must be a string")
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QgaError("QMP input member 'arguments' must be an object")
        elif key != "id":
            raise QgaError(f"QMP input member '{key}' is unexpected")
    if "execute" not in item:
        raise QgaError("QMP input lacks member 'execute'")
    return item["execute"], item.get("arguments", {}), item.get("id", _NO_ID)


def audit_record(cmd: Command, kwargs: Dict[str, Any], result: str,
                 error: Optional[str] = None, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write the one audit record of an audited command.

    It shows the arguments the command declares in ``audit``; anything else --
    file data (buf-b64), exec input and environment, passwords, ssh keys -- is
    only named in ``withheld``, never written.
    """
    fields: Dict[str, Any] = {"command": cmd.name}
    fields.update((k, v) for k, v in kwargs.items() if k in cmd.audit_args)
    withheld = sorted(k for k in kwargs if k not in cmd.audit_args)
    if withheld:
        fields["withheld"] = ",".join(withheld)
    for key, value in (extra or {}).items():
        if key not in fields and key not in ("result", "error"):
            fields[key] = value
    fields["result"] = result
    if error is not None:
        fields["error"] = error
    audit_log.info("audit: %s", cmd.name, extra={"qga_fields": fields})


def run_command(ctx: Context, cmd: Command, kwargs: Dict[str, Any], rid: Any) -> Optional[Reply]:
    """Call the handler and encode its reply (None: nothing to send).

    An ``audit=True`` command yields exactly one audit record, written here
    with its whitelisted arguments, what the handler reported through
    ``ctx.audit`` and the result.
    """
    if not cmd.audit:
        return _call(ctx, cmd, kwargs, rid)[0]
    AUDIT_SCOPE.fields = {}
    try:
        reply, error = _call(ctx, cmd, kwargs, rid)
        extra = AUDIT_SCOPE.fields
    finally:
        AUDIT_SCOPE.fields = None
    audit_record(cmd, kwargs, "ok" if error is None else "error", error, extra)
    return reply


def _call(ctx: Context, cmd: Command, kwargs: Dict[str, Any],
          rid: Any) -> Tuple[Optional[Reply], Optional[str]]:
    """(reply, error desc or None)."""
    try:
        result = cmd.func(ctx, **kwargs)
    except QgaError as err:
        return error_reply(err, rid), err.desc
    except Exception as exc:  # a handler bug must never crash the agent or leak a traceback
        log.exception("unexpected error in %s", cmd.name)
        internal = QgaError(f"internal error in {cmd.name}: {type(exc).__name__}: {exc}")
        return error_reply(internal, rid), internal.desc
    if not cmd.success_response:
        return None, None
    reply = _encode_return(result, rid)
    if cmd.reply_prefix:
        reply = cmd.reply_prefix + reply if type(reply) is bytes else [cmd.reply_prefix, *reply]
    return reply, None


class Dispatcher:
    """Runs requests in arrival order and sends each reply through ``send``."""

    def __init__(self, ctx: Context, send: Callable[[Reply], None],
                 default_deadline: float = 60.0) -> None:
        """``default_deadline``: seconds for commands declared with COMMAND_TIMEOUT."""
        self.ctx = ctx
        self.send = send
        self.default_deadline = default_deadline
        self.queue: Deque[Any] = deque()
        self.worker = Worker(lambda fn: ctx.loop.call_soon_threadsafe(fn))
        self._busy: Optional[Tuple[int, Command]] = None
        #: The one outstanding deadline timer.  It is never cancelled (a
        #: cancelled timer stays in the loop's heap until it is due, so one
        #: timer per command would hold memory for ``deadline`` seconds under
        #: load); when it fires it checks the running job and re-arms itself.
        self._timer: Any = None
        #: (job, monotonic time it expires, command, request id, seconds, arguments).
        self._deadline: Optional[Tuple[int, float, Command, Any, float, Dict[str, Any]]] = None
        self._job = 0

    @property
    def backlog(self) -> int:
        """Requests waiting (for backpressure on the channel)."""
        return len(self.queue) + (1 if self._busy else 0)

    def submit(self, items: List[Any]) -> None:
        """Queue parsed items and start what can start."""
        self.queue.extend(items)
        self._pump()

    def _pump(self) -> None:
        while self.queue and self._busy is None:
            item = self.queue.popleft()
            if isinstance(item, JsonParseError):
                self.send(error_reply(QgaError(item.desc)))
                continue
            rid = item.get("id", _NO_ID) if isinstance(item, dict) else _NO_ID
            try:
                name, arguments, rid = check_request(item)
                cmd = self.ctx.registry.lookup(name)
                kwargs = cmd.validate(arguments)
            except QgaError as err:
                self.send(error_reply(err, rid))
                continue
            log.debug("running %s", name)
            if cmd.inline:
                self._reply(run_command(self.ctx, cmd, kwargs, rid))
                continue
            self._start(cmd, kwargs, rid)

    def _reply(self, data: Optional[Reply]) -> None:
        if data is not None:
            self.send(data)

    def _start(self, cmd: Command, kwargs: Dict[str, Any], rid: Any) -> None:
        self._job += 1
        job = self._job
        self._busy = (job, cmd)
        deadline = self.default_deadline if cmd.deadline is COMMAND_TIMEOUT else cmd.deadline
        if deadline is not None:
            when = time.monotonic() + deadline
            self._deadline = (job, when, cmd, rid, deadline, kwargs)
            if self._timer is not None and self._timer.when > when:
                self._timer.cancel()  # a shorter deadline than the armed one: rare
                self._timer = None
            if self._timer is None:
                self._timer = self.ctx.loop.call_later(deadline, self._check_deadline)
        self.worker.submit(lambda: run_command(self.ctx, cmd, kwargs, rid),
                           lambda data: self._finished(job, data))

    def _finished(self, job: int, data: Optional[Reply]) -> None:
        if self._busy is None or self._busy[0] != job:
            log.warning("discarding the late reply of an abandoned command")
            return
        self._deadline = None
        self._busy = None
        self._reply(data)
        self._pump()

    def _check_deadline(self) -> None:
        self._timer = None
        if self._deadline is None or self._busy is None or self._busy[0] != self._deadline[0]:
            return
        job, when, cmd, rid, deadline, kwargs = self._deadline
        remaining = when - time.monotonic()
        if remaining > 0:
            self._timer = self.ctx.loop.call_later(remaining, self._check_deadline)
            return
        log.error("%s did not finish within %g s: abandoned", cmd.name, deadline)
        if cmd.audit:  # a second record follows if the handler ever finishes
            audit_record(cmd, kwargs, "timeout", f"no result within {deadline:g} s")
        self._busy = None
        self._deadline = None
        self.worker.abandon()
        self.send(error_reply(QgaError(
            f"command {cmd.name} did not complete within {deadline:g} seconds"), rid))
        self._pump()
