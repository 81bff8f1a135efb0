"""qemu-ga 10.2's commands as the project's spec records them (tests/data/qemu/commands-10.2.json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

#: Every command of the 10.2 schema, in schema (registration) order.
COMMANDS: List[Dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data/qemu/commands-10.2.json").read_text())["commands"]
#: The names 10.2 registers on Linux, in registration order (guest-info reverses it).
LINUX_NAMES: List[str] = [c["name"] for c in COMMANDS if c["on-linux"]]
