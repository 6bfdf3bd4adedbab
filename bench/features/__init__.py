"""Benchmarks of single features, each runnable as a script."""
