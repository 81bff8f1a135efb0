"""The dispatcher's per-command deadline, in-process (fast, no FUSE needed).

Regression for a soak finding: one cancelled deadline timer per worker
command stayed in the loop's heap for the full deadline (60 s), so RSS grew
with the request rate (12 MiB in 90 s of mixed requests).  The dispatcher
now keeps at most one deadline timer armed.
"""
from __future__ import annotations

import tempfile
import threading
from typing import Any, Iterator, List

import pytest

from qga.registry import Registry
from tests.hardening.inproc import InProcessAgent, safe_commands
from tests.hardening.util import parse_reply_line

_release = threading.Event()


_slow_threads: List[threading.Thread] = []


def _slow(ctx: Any, **kwargs: Any) -> dict:
    _slow_threads.append(threading.current_thread())
    _release.wait(30)
    return {"late": True}


def _fast(ctx: Any, **kwargs: Any) -> dict:
    return {"fast": True}


@pytest.fixture
def agent() -> Iterator[InProcessAgent]:
    """In-process agent with x-slow (deadline 0.3 s) and x-fast (deadline 1 h) commands."""
    base = {c.name: c for c in safe_commands()}
    ping = base["guest-file-flush"]   # any worker command with one int argument
    extra = [ping.replace(name="x-slow", func=_slow, deadline=0.3, audit=False),
             ping.replace(name="x-fast", func=_fast, deadline=3600.0, audit=False)]
    with tempfile.TemporaryDirectory() as tmp:
        a = InProcessAgent(tmp)
        a.registry = Registry(list(base.values()) + extra)
        a.ctx.registry = a.registry
        _release.clear()
        yield a
        _release.set()
        a.close()


def test_short_deadline_after_long_one(agent: InProcessAgent) -> None:
    """A 0.3 s command right after an hour-long one still times out at 0.3 s.

    feed() gives up after 30 s, long before the hour-long timer could fire:
    the error for x-slow can only come from its own 0.3 s deadline.
    """
    agent.feed(b'{"execute": "x-fast", "arguments": {"handle": 1}, "id": 1}'
               b'{"execute": "x-slow", "arguments": {"handle": 1}, "id": 2}'
               b'{"execute": "guest-ping", "id": 3}', timeout=30)
    replies = [parse_reply_line(line) for line in agent.take()]
    assert replies == [
        {"return": {"fast": True}, "id": 1},
        {"error": {"class": "GenericError",
                   "desc": "command x-slow did not complete within 0.3 seconds"}, "id": 2},
        {"return": {}, "id": 3}]
    _release.set()
    _slow_threads.pop().join(60)  # the abandoned job has posted its late result
    agent.loop.call_soon_threadsafe(agent.loop.stop)
    agent.loop.run()  # deliver it (queued before the stop): discarded
    agent.feed(b'{"execute": "guest-ping", "id": 4}')
    assert [parse_reply_line(line) for line in agent.take()] == [{"return": {}, "id": 4}]


def test_deadline_timers_do_not_accumulate(agent: InProcessAgent) -> None:
    """Thousands of worker commands leave at most two timers in the loop."""
    batch = b"".join(b'{"execute": "x-fast", "arguments": {"handle": 1}, "id": %d}' % i
                     for i in range(3000))
    agent.feed(batch, timeout=60)
    assert len(agent.take()) == 3000
    assert len(agent.loop._timers) <= 2, len(agent.loop._timers)  # noqa: SLF001
