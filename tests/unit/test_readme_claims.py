"""README's "Claims and their tests" table names tests that exist."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIERS = {"R/": "tests/root/", "F/": "tests/functional/", "U/": "tests/unit/", "H/": "tests/hardening/"}


def test_every_test_the_claims_table_names_exists() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Claims and their tests"):text.index("## Layout")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) >= 30
    for row in rows:
        current = None
        for ref in re.findall(r"`([^`]+)`", row.split("|")[2]):
            path, _, name = ref.partition("::")
            if path:
                path = TIERS.get(path[:2], path[:2]) + path[2:]
                if not path.startswith("tests/"):
                    continue  # not a test (benchmarks/results, an environment setting)
                current = REPO / path
            assert current is not None and current.exists(), f"{row}: no {ref}"
            if name:
                assert re.search(rf"^def {re.escape(name)}\(", current.read_text(), re.M), f"{current}: no {name}"
