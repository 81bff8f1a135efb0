"""Command modules, one per subject; importing them declares their commands.

They turn the failures qga.linux raises (OSError, its own InternalError
subclasses) into qemu-ga's texts; :mod:`qga.commands.failures` holds the
wordings several of them share.
"""
from __future__ import annotations

import importlib
import os
from typing import List

from qga.command import Command, declared


def load() -> List[Command]:
    """Import every module of this package (each declares its commands) and return them all.

    The list of modules is the package's directory: a new module needs no
    entry anywhere.
    """
    # A directory listing, not pkgutil: pkgutil's imports cost the agent's start-up.
    for name in sorted(os.listdir(__path__[0])):
        if name.endswith(".py") and name != "__init__.py":
            importlib.import_module(f"{__name__}.{name[:-3]}")
    return declared()
