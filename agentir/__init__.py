"""agentir: offline agentic image restoration (AgenticIR) on an asyncio actor bus.

The application package: the in-process API (:class:`agentir.pipeline.Restorer`), the CLI and,
as they land, the daemon, streaming and benchmarks. Nothing else imports this package.
"""

__version__ = "0.1.0"
