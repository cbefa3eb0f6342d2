"""Benchmark suites and the judge of compiled programs."""
