"""Paper figures, one module per figure, each drawn from saved results.

Figure modules (each has ``make_figure(results_dir, out_dir) -> list[Path]``, most also ``draw(results_dir)``
returning the unsaved matplotlib Figure, and each can run alone as
``python -m paper_figures.<module> --results DIR --out DIR``):

- :mod:`paper_figures.theory_solver_benchmark`: ``theory.solve_dual`` against cvxpy and ``logsumexp``;
- :mod:`paper_figures.parametrization_gap`: the laboratory's gaps vs nu with bounds, exact vs practical CAID;
- :mod:`paper_figures.fig1a_expected_vs_actual`, :mod:`~paper_figures.fig1b_tradeoff`,
  :mod:`~paper_figures.fig1c_histograms`: the single-constraint SmolLM2 sweep (Fig. 1);
- :mod:`paper_figures.real_lagrangian_gap`: the trained policies' Lagrangian gap;
- :mod:`paper_figures.fig2_two_constraints`: the two-constraint sweep (Fig. 2);
- :mod:`paper_figures.fig3_dual_convergence`: the plug-in dual vs sample size (Fig. 3).

Shared styling and saving live in :mod:`paper_figures.style`; the checked reading of saved results files
(a named refusal for an empty, truncated or header-only file) in :mod:`paper_figures.results_files`; the
commands that produce the LLM results in :mod:`paper_figures.producers`; ``RESULTS/REPORT.md`` in
:mod:`paper_figures.report` (importable without torch).
``python -m paper_figures all`` produces missing results, draws every figure and writes the report.
"""
