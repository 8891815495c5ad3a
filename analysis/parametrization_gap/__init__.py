"""The exact parametrization-gap laboratory (``python -m analysis.parametrization_gap``), one module per concept.

* :mod:`~analysis.parametrization_gap.sequence_world`: an enumerable response space (all V**L token sequences)
  with scores;
* :mod:`~analysis.parametrization_gap.reference_transformer`: the pretrained reference transformer pi_ref;
* :mod:`~analysis.parametrization_gap.policy_classes`: tabular, low-rank log-linear and transformer policy
  classes with exact log-probs;
* :mod:`~analysis.parametrization_gap.exact_caid`: Lagrangian maximisation and dual descent on D_p (exact CAID);
* :mod:`~analysis.parametrization_gap.practical_caid`: practical CAID, DPO on Bernoulli pseudo-labels with
  sampled dual steps;
* :mod:`~analysis.parametrization_gap.hypotheses`: the assumptions of each bound, checked (Slater margins by a
  linear program, strong convexity along a segment, Assumption 1), torch-free;
* :mod:`~analysis.parametrization_gap.measurements`: one class measured against the exact optimum and the
  paper's bounds, each under its checked hypotheses;
* :mod:`~analysis.parametrization_gap.scaling`: each bound's checks (applicable or not, violated or not), each
  gap's slope against nu with a bootstrap interval, and its looseness (torch-free);
* :mod:`~analysis.parametrization_gap.laboratory`: the configuration and the resumable runner.

Importing this package imports nothing heavy; the modules above that need torch import it themselves.
"""
