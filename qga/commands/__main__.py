"""``python3 -m qga.commands``: rewrite :mod:`qga.commands._index` from the declarations."""
import os

from qga.commands import index_source

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_index.py")
with open(path, "w", encoding="utf-8") as f:
    f.write(index_source())
print(f"wrote {path}")
