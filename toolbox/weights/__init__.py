"""Shipped weights of the learned tools (``NAME.safetensors``; retrain with ``agentir train tool NAME``).

A package only so that the weights ship with the wheel (package data ``*.safetensors``).
"""
