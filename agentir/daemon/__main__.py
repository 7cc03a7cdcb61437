"""``python -m agentir.daemon ...``: the same as ``agentir serve`` (see :mod:`agentir.daemon`)."""

from __future__ import annotations

import sys

from agentir.daemon import main_serve

sys.exit(main_serve(sys.argv[1:]))
