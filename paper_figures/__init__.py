"""Paper figures, one module per figure, each drawn from saved results.

Figure modules (each has ``make_figure(results_dir, out_dir) -> list[Path]`` and can run alone as
``python -m paper_figures.<module> --results DIR --out DIR``):

- :mod:`paper_figures.theory_solver_benchmark`: time and agreement of ``theory.solve_dual`` against
  ``theory.solve_primal`` and a ``logsumexp`` pass, from ``benchmarks/solver_benchmark.csv``.

Shared styling and saving live in :mod:`paper_figures.style`. ``python -m paper_figures all``
produces missing results and draws every figure.
"""
