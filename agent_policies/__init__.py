"""Pluggable decision policies: perception, planning, reflection, and the search that uses them.

Each kind of policy sits behind a small Protocol and a registry (:mod:`agentir.agent_policies.registry`);
the actors only ever call the protocols. The search over subtask orders
(:mod:`agentir.agent_policies.search`) is a pure state machine, testable without any actor.
"""
