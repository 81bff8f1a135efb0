"""Command modules, one per subject; importing them registers their commands."""
from qga.commands import (  # noqa: F401
    accounts, core, cpu_memory, files, freeze, guest_exec, network, power, storage, system,
)
