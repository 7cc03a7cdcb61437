"""Restoration tools and degradation synthesis (a leaf package: imports neither bus, actors nor policies).

Kept free of heavy imports so that ``toolbox.vocab`` stays cheap; import submodules directly.
"""
