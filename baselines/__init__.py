"""Baseline detectors (Deep SVDD, Deep SAD, FLOS, MINNS, KDAD), registered as plugins."""
