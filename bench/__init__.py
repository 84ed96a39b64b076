"""Benchmarks: `make bench` runs them all and prints rates and ratios (never pass/fail timings)."""
