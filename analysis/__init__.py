"""Empirical measurements of the parametrization gap and the optimality bounds.

The exact laboratory (``python -m analysis.parametrization_gap``), one module per concept:

* :mod:`analysis.sequence_world`: an enumerable response space (all V**L token sequences) with scores;
* :mod:`analysis.reference_model`: the pretrained reference transformer pi_ref;
* :mod:`analysis.policy_classes`: tabular, log-linear and transformer policy classes with exact log-probs;
* :mod:`analysis.exact_caid`: Lagrangian maximisation and dual descent on D_p (exact CAID);
* :mod:`analysis.pseudo_label_dpo`: practical CAID, DPO on Bernoulli pseudo-labels with sampled dual steps;
* :mod:`analysis.gap_measurements`: one class measured against the exact optimum and the paper's bounds;
* :mod:`analysis.parametrization_gap`: the configuration, the resumable runner and the command line.
"""
