"""Benchmarks, each timed against a baseline in the same run (ratios, not absolute times).

* :mod:`benchmarks.solver_benchmark`: :func:`theory.solve_dual` against :func:`theory.solve_primal` (cvxpy);
* :mod:`benchmarks.dpo_throughput`: the CAID trainer's DPO epoch against TRL's ``DPOTrainer`` (``make bench-dpo``);
* :mod:`benchmarks.threshold_sweep`: a threshold sweep reusing the reference phase against one that does not.

Results and how to read them: ``benchmarks/README.md``.
"""
