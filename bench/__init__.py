"""Benchmarks: run as modules (``python -m bench.reconnect``); not part of the test suite."""
