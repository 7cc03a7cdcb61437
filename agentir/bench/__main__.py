"""``python -m agentir.bench DATA_DIR ...``: the same as ``agentir bench`` (see :mod:`agentir.bench`)."""

from __future__ import annotations

import os
import sys

from agentir.bench import main_bench
from agentir.cli import _configure_logging

_configure_logging(os.environ.get("AGENTIR_LOG_LEVEL", "warning"), json_logs=False)
sys.exit(main_bench(sys.argv[1:]))
