"""``python -m agentir.cluster``: the same as ``agentir worker``."""

from __future__ import annotations

import sys

from agentir.cluster import main_worker

if __name__ == "__main__":
    sys.exit(main_worker())
