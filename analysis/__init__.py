"""Empirical measurements: statistics of LLM runs, the parametrization gap and the optimality bounds.

Statistics of LLM runs (pandas DataFrames, for notebooks):

* :mod:`analysis.statistics`: paired improvements with t and bootstrap CIs, constraint verdicts, run tables;
* :mod:`analysis.crossed_anova`: means of (seed x prompt) values with clustered prompts, their variance components
  and Satterthwaite degrees of freedom;
* :mod:`analysis.decisions`: the decision rules (TOST equivalence, one-sided t, intersection-union "closer"),
  Holm's correction over a table, and each verdict's size, power and coverage by simulation; the one verdict
  vocabulary;
* :mod:`analysis.claims`: the paper's Fig. 1 / Fig. 2 claims, their margins and the claims table both studies build;
* :mod:`analysis.pareto`: Pareto fronts of a threshold sweep;
* :mod:`analysis.dual_trajectory`: lambda(t) against the one-shot and final lambda, oscillation, best iterate;
* :mod:`analysis.dual_convergence`: the plug-in lambda*, D* vs prompts and responses (Fig. 3);
* :mod:`analysis.lagrangian_gap`: the trained policy's Lagrangian against the plug-in dual (the real-model gap).

Two exact laboratories, each a subpackage with its own command line:

* :mod:`analysis.parametrization_gap` (``python -m analysis.parametrization_gap``): an enumerable sequence
  world with a small pretrained transformer, where nu, every gap and every bound of Sec. 3 are computed exactly,
  each bound only where its hypotheses hold;
* :mod:`analysis.next_token` (``python -m analysis.next_token``): SmolLM2's one-token responses, where pi(.|x) is
  the model's full softmax, so the real model's constrained problem is solved exactly and CAID, one-shot and
  the DPO baselines are evaluated without sampling noise.
"""
