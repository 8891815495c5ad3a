"""The exact real-model laboratory: SmolLM2's one-token responses, solved exactly (``python -m analysis.next_token``).

When the response is a single token, pi(.|x) is the model's full next-token softmax, so every expectation,
KL, slack, Lagrangian and the distribution-space optimum of (U-CA) (Sec. 2) are exact finite sums over the
vocabulary. Modules, named after the mathematics:

* :mod:`analysis.next_token.world`: prompts and split, pi_ref (SmolLM2's softmax), standardised score tables;
* :mod:`analysis.next_token.problem`: the exact ConstrainedProblem, ``instance.npz``, the K-sample plug-in;
* :mod:`analysis.next_token.policy`: the trained class (top layers on a cached frozen trunk);
* :mod:`analysis.next_token.methods`: DPO, one-shot (plug-in / exact lambda*), CAID (exact / sampled dual
  steps), DPO_h, DPO_g, on the toolkit's one CAID loop (``llm.caid``) with ``llm.dpo``;
* :mod:`analysis.next_token.evaluation`: exact quantities of a policy next to the bounds of Sec. 4;
* :mod:`analysis.next_token.laboratory`: configuration and the resumable runner;
* :mod:`analysis.next_token.verdicts`: the claims table (:mod:`analysis.claims`, :mod:`analysis.decisions`).
"""
