"""The dispatcher, in process with a real loop and worker thread."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, List

import pytest

from qga.config import Config
from qga.context import Context
from qga.dispatch import _NO_ID, Dispatcher, run_command
from qga.errors import QgaError
from qga.codec import JsonStreamParser, dumps
from qga.loop import Loop
from qga.command import Command
from qga.registry import Registry
from qga.schema import compile_args
from qga.state import StateDir

RELEASE = threading.Event()
HANGING: List[threading.Thread] = []  # the worker threads x-hang ran on


def _cmd(name: str, func: Any, group: str = "info", **kw: Any) -> Command:
    return Command(name=name, func=func, group=group, validate=compile_args(kw.pop("args", None)), **kw)


def _freeze(ctx: Context) -> int:
    ctx.registry.frozen = True
    return 1


COMMANDS = [
    _cmd("guest-ping", lambda ctx: None, "protocol", inline=True, frozen_safe=True),
    _cmd("guest-sync", lambda ctx, id: id, "protocol", args={"id": "int"}, inline=True, frozen_safe=True),
    _cmd("guest-get-time", lambda ctx: 42),
    _cmd("guest-fsfreeze-freeze", _freeze, "fsfreeze", deadline=None),
    _cmd("guest-shutdown", lambda ctx: None, "system-control", success_response=False),
    _cmd("x-crash", lambda ctx: 1 / 0),
    _cmd("x-fail", lambda ctx: (_ for _ in ()).throw(QgaError("it failed"))),
    _cmd("x-hang", lambda ctx: HANGING.append(threading.current_thread()) or (RELEASE.wait(30) and "late"),
         deadline=0.3),
]


class Harness:
    def __init__(self, tmp_path: Any) -> None:
        self.loop = Loop()
        self.ctx = Context(Config(), StateDir(str(tmp_path)), self.loop, Registry(COMMANDS))
        self.out: List[bytes] = []
        self.dispatcher = Dispatcher(self.ctx, self.out.append)
        self.parser = JsonStreamParser()

    def feed(self, data: bytes, replies: int, timeout: float = 5.0) -> List[Any]:
        start = len(self.out)
        self.dispatcher.submit(self.parser.feed(data))
        deadline = time.monotonic() + timeout
        while len(self.out) - start < replies:
            assert time.monotonic() < deadline, f"only {self.out[start:]}"
            self.loop.call_later(0.01, self.loop.stop)
            self.loop.run()
        return [json.loads(line) for line in self.out[start:]]


@pytest.fixture
def h(tmp_path: Any) -> Harness:
    return Harness(tmp_path)


def test_replies_keep_request_order_across_inline_and_worker(h: Harness) -> None:
    replies = h.feed(b'{"execute":"guest-get-time","id":1}{"execute":"guest-ping","id":2}'
                     b'{"execute":"guest-sync","arguments":{"id":3}}', 3)
    assert replies == [{"return": 42, "id": 1}, {"return": {}, "id": 2}, {"return": 3}]


@pytest.mark.parametrize("rid", [b"", b', "id": 7', b', "id": "a\\u00e9"', b', "id": {"b": [1.5, null], "a": true}',
                                 b', "id": -0.0'])
@pytest.mark.parametrize("result", [[{"user": "root", "login-time": 1.25}, {"a": [], "b": {}}, "x"], [], {}])
def test_a_result_is_written_inside_its_reply_whatever_the_id(rid: bytes, result: Any) -> None:
    # The wrapper {"return": ..., "id": ...} is written around the result, not as an object of its own.
    request = json.loads(b'{"x": 0' + rid + b"}")
    reply = run_command(None, _cmd("x-list", lambda ctx: result, inline=True), {}, request.get("id", _NO_ID))
    expected = {"return": result, "id": request["id"]} if "id" in request else {"return": result}
    assert reply == dumps(expected)


def test_gate_applies_when_a_request_starts_not_when_it_arrives(h: Harness) -> None:
    replies = h.feed(b'{"execute":"guest-fsfreeze-freeze"}{"execute":"guest-get-time"}'
                     b'{"execute":"guest-ping"}', 3)
    assert replies[0] == {"return": 1}
    assert replies[1]["error"] == {"class": "CommandNotFound",
                                   "desc": "Command guest-get-time has been disabled: the command is not allowed"}
    assert replies[2] == {"return": {}}


def test_handler_exception_is_a_generic_error_not_a_crash(h: Harness) -> None:
    replies = h.feed(b'{"execute":"x-crash","id":"c"}{"execute":"x-fail"}{"execute":"guest-ping"}', 3)
    assert replies[0]["id"] == "c" and replies[0]["error"]["class"] == "GenericError"
    assert "ZeroDivisionError" in replies[0]["error"]["desc"] and "Traceback" not in replies[0]["error"]["desc"]
    assert replies[1] == {"error": {"class": "GenericError", "desc": "it failed"}}
    assert replies[2] == {"return": {}}


def test_no_reply_on_success_for_success_response_false(h: Harness) -> None:
    replies = h.feed(b'{"execute":"guest-shutdown"}{"execute":"guest-ping","id":9}', 1)
    assert replies == [{"return": {}, "id": 9}]
    assert h.feed(b'{"execute":"guest-shutdown","arguments":{"x":1}}', 1) == [
        {"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}]


def test_deadline_answers_with_an_error_and_later_requests_are_served(h: Harness) -> None:
    RELEASE.clear()
    try:
        replies = h.feed(b'{"execute":"x-hang","id":1}{"execute":"guest-get-time","id":2}', 2)
        assert replies[0] == {"id": 1, "error": {"class": "GenericError",
                                                  "desc": "command x-hang did not complete within 0.3 seconds"}}
        assert replies[1] == {"return": 42, "id": 2}
        assert h.dispatcher.worker.abandoned == 1
    finally:
        RELEASE.set()
    # The abandoned thread finishes and posts its late result to the loop; running
    # the loop until a callback queued after that one runs lets the dispatcher see it.
    HANGING.pop().join(60)
    sent = len(h.out)
    h.loop.call_soon_threadsafe(h.loop.stop)
    h.loop.run()
    assert h.out[sent:] == [], "the late result of an abandoned command was sent"
    assert h.feed(b'{"execute":"guest-ping"}', 1) == [{"return": {}}]


def test_command_timeout_is_a_sentinel_not_a_value(tmp_path: Any) -> None:
    """--command-timeout replaces only the default deadline; an explicit 60.0 stays 60.0."""
    hang = _cmd("x-default", lambda ctx: RELEASE.wait(30) and "late")
    explicit = _cmd("x-explicit", lambda ctx: RELEASE.wait(30) and "done", deadline=60.0)
    h = Harness(tmp_path)
    h.ctx.registry = Registry(COMMANDS + [hang, explicit])
    h.dispatcher = Dispatcher(h.ctx, h.out.append, default_deadline=0.3)
    RELEASE.clear()
    try:
        assert h.feed(b'{"execute":"x-default"}', 1) == [{"error": {
            "class": "GenericError", "desc": "command x-default did not complete within 0.3 seconds"}}]
        h.dispatcher.submit(h.parser.feed(b'{"execute":"x-explicit"}'))
        assert h.dispatcher._deadline is not None and h.dispatcher._deadline[4] == 60.0
    finally:
        RELEASE.set()
    assert h.feed(b"", 1) == [{"return": "done"}]
