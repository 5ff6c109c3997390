"""Benchmarks: `make bench` runs them; figures and how to rerun them: docs/BENCHMARKS.md."""
