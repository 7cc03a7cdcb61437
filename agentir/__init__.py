"""agentir: offline agentic image restoration (AgenticIR) on an asyncio actor bus.

The one import package. It holds the five layers as subpackages, ``agentir.bus``,
``agentir.kernels``, ``agentir.toolbox``, ``agentir.agent_policies`` and ``agentir.actors`` (in a
checkout, links to the top-level folders of those names), and above them the application: the
in-process API (:class:`agentir.pipeline.Restorer`), the CLI, the daemon, streaming and the
benchmarks. This ``__init__`` defines only the version and imports nothing, so ``agentir.bus``
importing ``agentir.bus.codec`` depends on nothing above the bus; ``tests/test_layers.py`` checks
that the layers import one way (``agentir.cli`` and the like are the top layer).
"""

__version__ = "0.1.0"
