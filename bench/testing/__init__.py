"""Fakes faithful to the real APIs, for tests and client benchmarks (no GPU, no model)."""
