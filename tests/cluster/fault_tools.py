"""Tools that misbehave on purpose, registered in the test process and in the workers it starts.

``test_sleepy`` holds its step for ``AGENTIR_TEST_SLEEP`` seconds (a worker is then reliably
caught mid-step) and returns its input; ``test_crash`` kills the worker process running it, as a
segfaulting model would. Both are tagged manual: only jobs that name them use them.
"""

from __future__ import annotations

import os
import time

import torch

from agentir.toolbox.base import TOOL_INFO, ToolInfo, register_tool


class _Sleepy:
    name, degradation, scale, device = "test_sleepy", "noise", 1, "cpu"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(float(os.environ.get("AGENTIR_TEST_SLEEP", "0.2")))
        return batch.clone()


class _Crash:
    name, degradation, scale, device = "test_crash", "noise", 1, "cpu"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        os._exit(17)


def register() -> None:
    if "test_sleepy" not in TOOL_INFO:
        register_tool(ToolInfo(name="test_sleepy", degradation="noise", kind="plugin", tags=("plugin", "manual")), _Sleepy)
        register_tool(ToolInfo(name="test_crash", degradation="noise", kind="plugin", tags=("plugin", "manual")), _Crash)


#: Job options that run exactly one step, with the given tool.
def one_step(tool: str) -> dict[str, object]:
    return {"subtasks": ["noise"], "tools": {"noise": [tool]}, "max_tool_calls": 1, "reflection": "none"}


if __name__ == "__main__":  # the worker launcher: register the tools, then run agentir worker
    import sys

    import agentir.toolbox.tools  # noqa: F401 - the built-in tools first, as the worker does

    register()
    from agentir.cluster import main_worker

    sys.exit(main_worker(sys.argv[1:]))
