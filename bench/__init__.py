"""Benchmarks: `make bench` runs them; figures and commands are in the README."""
