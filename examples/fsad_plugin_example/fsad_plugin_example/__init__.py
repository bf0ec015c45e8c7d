"""Example fsad-bench plugin: a patch colour-distance detector."""
