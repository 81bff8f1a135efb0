"""qemu-ga-py: a drop-in reimplementation of the QEMU Guest Agent."""

__version__ = "0.1.0"
#: The QEMU release whose guest-agent schema and behaviour this package implements.
#: Reported by guest-info and -V, as qemu-ga reports its QEMU version.
QEMU_VERSION = "10.2.0"
