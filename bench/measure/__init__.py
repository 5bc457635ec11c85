"""Measure: request records + energy -> the typed groups of one load point (groups.py):
metrics, energy per token, cost, roofline, validity. Pure functions; no I/O."""
