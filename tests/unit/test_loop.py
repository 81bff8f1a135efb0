"""The event loop keeps nothing alive once a callback has run."""
from __future__ import annotations

import weakref
from typing import Any, List, Optional

from qga.loop import Loop


class Payload:
    """Stands for a big worker result (weakly referenceable)."""


def test_a_delivered_result_is_released_before_the_loop_waits_again() -> None:
    loop = Loop()
    ref: List[Optional["weakref.ref[Any]"]] = [None]
    alive: List[bool] = []

    def deliver(result: Payload) -> None:
        ref[0] = weakref.ref(result)
        loop.call_later(0.01, check)

    def check() -> None:
        ref_ = ref[0]
        alive.append(ref_ is not None and ref_() is not None)
        loop.stop()

    loop.call_soon_threadsafe(deliver, Payload())  # as the worker hands back a result
    try:
        loop.run()
    finally:
        loop.close()
    assert alive == [False]


def test_the_worker_keeps_no_finished_job_alive() -> None:
    from qga.worker import Worker

    loop = Loop()
    worker = Worker(loop.call_soon_threadsafe)
    arg = Payload()
    ref = weakref.ref(arg)
    seen: List[bool] = []

    def check() -> None:
        seen.append(ref() is not None)
        loop.stop()

    worker.submit(lambda a=arg: None, lambda _result: loop.call_later(0.05, check))
    del arg
    try:
        loop.run()
    finally:
        worker.stop()
        loop.close()
    assert seen == [False]
