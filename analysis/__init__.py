"""Empirical measurements of the parametrization gap and the optimality bounds (in progress)."""
