"""Empirical measurements of the parametrization gap and the optimality bounds.

Statistics of LLM runs (pandas DataFrames, for notebooks):

* :mod:`analysis.statistics`: paired improvements with t and bootstrap CIs, constraint verdicts, run tables;
* :mod:`analysis.pareto`: Pareto fronts of a threshold sweep;
* :mod:`analysis.dual_trajectory`: lambda(t) against the one-shot and final lambda, oscillation, best iterate;
* :mod:`analysis.dual_convergence`: the plug-in lambda*, D* vs prompts and responses (Fig. 3);
* :mod:`analysis.lagrangian_gap`: the trained policy's Lagrangian against the plug-in dual (the real-model gap).

The exact laboratory (``python -m analysis.parametrization_gap``), one module per concept:

* :mod:`analysis.parametrization_gap.sequence_world`: an enumerable response space (all V**L token sequences) with scores;
* :mod:`analysis.parametrization_gap.reference_transformer`: the pretrained reference transformer pi_ref;
* :mod:`analysis.parametrization_gap.policy_classes`: tabular, log-linear and transformer policy classes with exact log-probs;
* :mod:`analysis.parametrization_gap.exact_caid`: Lagrangian maximisation and dual descent on D_p (exact CAID);
* :mod:`analysis.parametrization_gap.practical_caid`: practical CAID, DPO on Bernoulli pseudo-labels with sampled dual steps;
* :mod:`analysis.parametrization_gap.measurements`: one class measured against the exact optimum and the paper's bounds;
* :mod:`analysis.parametrization_gap`: the configuration, the resumable runner and the command line.
"""
