"""The worker thread, with the loop's side played by the test."""
from __future__ import annotations

import threading
from typing import Any, Callable, List, Tuple

from qga.worker import Worker


def test_each_result_reaches_its_own_callback_when_the_loop_runs_late() -> None:
    # The loop thread may run the posted callbacks only after the worker has
    # taken the next job: each callback must still carry its own job's result.
    posted: List[Callable[[], None]] = []
    both_posted = threading.Event()

    def post(callback: Callable[[], None]) -> None:
        posted.append(callback)
        if len(posted) == 2:
            both_posted.set()

    delivered: List[Tuple[str, Any]] = []
    worker = Worker(post)
    worker.submit(lambda: 1, lambda result: delivered.append(("first", result)))
    worker.submit(lambda: 2, lambda result: delivered.append(("second", result)))
    assert both_posted.wait(30), "the worker did not finish two trivial jobs"
    worker.stop()
    for callback in posted:
        callback()
    assert delivered == [("first", 1), ("second", 2)]
