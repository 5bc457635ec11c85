"""Measure: request records + energy -> the figures of one load point: metrics, energy per
token, cost, roofline, validity. Pure functions; no I/O."""
