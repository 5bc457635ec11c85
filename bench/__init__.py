"""bench: GPU inference benchmarking harness (tokens per second, per watt, per dollar)."""

__version__ = "0.1.0"
