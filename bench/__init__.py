"""Benchmarks: measured figures, printed and written as JSON (not timed tests)."""
