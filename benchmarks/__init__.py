"""Benchmarks of the exact solvers in :mod:`theory`."""
