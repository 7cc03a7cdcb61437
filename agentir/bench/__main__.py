"""``python -m agentir.bench DATA_DIR ...``: the same as ``agentir bench`` (see :mod:`agentir.bench`)."""

from __future__ import annotations

import sys

from agentir.bench import main_bench
from agentir.logs import configure_logging
from agentir.settings import Settings

configure_logging(Settings.from_env().log_level, json_logs=False)
sys.exit(main_bench(sys.argv[1:]))
