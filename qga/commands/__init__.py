"""Command modules, one per subject; importing them declares their commands.

They turn the failures qga.linux raises (OSError, its own InternalError
subclasses) into qemu-ga's texts; :mod:`qga.commands.failures` holds the
wordings several of them share.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import List

from qga.command import Command, declared


def load() -> List[Command]:
    """Import every module of this package (each declares its commands) and return them all.

    The list of modules is the package's directory: a new module needs no
    entry anywhere.
    """
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return declared()
