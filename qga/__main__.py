"""``python -m qga``: run the agent."""
import sys

from qga.cli import main

sys.exit(main())
