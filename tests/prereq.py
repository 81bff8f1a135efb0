"""Missing prerequisites: a skip that names the reason, but a failure in CI.

A tier that cannot run (no kernel for the VM tier, no FUSE, no atheris, ...)
must not leave CI green: with ``CI=true`` in the environment (as CI services
set it) :func:`require` fails the test instead of skipping it.  To leave a
tier out of a CI run on purpose, deselect it (``-m "not vm"``), which the
command line shows.
"""
from __future__ import annotations

import os
from typing import Optional

import pytest


def in_ci() -> bool:
    """True when ``CI`` is ``true`` (any case) or ``1``."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require(problem: Optional[str]) -> None:
    """Return if *problem* is None; else skip naming it, or fail under ``CI=true``."""
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"prerequisite missing under CI=true: {problem}", pytrace=False)
    pytest.skip(problem)
