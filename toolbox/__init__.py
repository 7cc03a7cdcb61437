"""Restoration tools and degradation synthesis (a leaf package: imports neither bus, actors nor policies).

Kept free of heavy imports so that ``agentir.toolbox.vocab`` stays cheap; import submodules directly.
"""
