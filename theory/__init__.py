"""Exact theory of constrained alignment (U-CA) on enumerable response sets.

Solvers for the distribution-space problem (closed-form dual and a cvxpy primal), the primal and dual
quantities of the paper (Sec. 2: problem (U-CA), the Lagrangian (1), the tilted policy (3) and the dual
problem (4)), duality certificates, the perturbation function (Sec. 3.3), and calculators for every bound
in the paper's theory (:mod:`theory.bounds`: Lemmas 1-8, Theorems 1-6, App. B).
"""

from theory import bounds
from theory.certificate import DualityCertificate, certify
from theory.dual import (
    DualEvaluation,
    dual_gradient,
    dual_hessian,
    dual_value,
    evaluate_dual,
    tilted_policy,
)
from theory.dual_solver import DualSolution, DualSolverError, solve_dual
from theory.lagrangian import constraint_slacks, kl_divergence, lagrangian, objective
from theory.perturbation import PerturbationCurve, perturbation_function
from theory.primal_solver import PrimalSolution, PrimalSolverError, solve_primal
from theory.problem import ConstrainedProblem, InfeasibleProblemError

__all__ = [
    "ConstrainedProblem",
    "DualEvaluation",
    "DualSolution",
    "DualSolverError",
    "DualityCertificate",
    "InfeasibleProblemError",
    "PerturbationCurve",
    "PrimalSolution",
    "PrimalSolverError",
    "bounds",
    "certify",
    "constraint_slacks",
    "dual_gradient",
    "dual_hessian",
    "dual_value",
    "evaluate_dual",
    "kl_divergence",
    "lagrangian",
    "objective",
    "perturbation_function",
    "solve_dual",
    "solve_primal",
    "tilted_policy",
]
