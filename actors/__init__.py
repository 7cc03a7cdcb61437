"""Actors: the Actor base, the Perceiver, Planner, Executor and Reflector, and their supervisor.

They talk only through the bus (msgpack on every hop) and the blob store, so each can run in
another process or on another machine unchanged.
"""

from agentir.actors.base import Actor, ActorError
from agentir.actors.supervisor import Supervisor, SupervisorGaveUp, build_actors

__all__ = ["Actor", "ActorError", "Supervisor", "SupervisorGaveUp", "build_actors"]
