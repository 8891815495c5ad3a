"""The rungs of policy accuracy of the nu dial, and how each method's policy is obtained on a rung.

A rung fixes how a policy responds to multipliers lambda:

* ``exact``: the tilt pi*(lambda) itself (eq. (3); nu = 0). CAID on this rung is exact dual ascent on tilts,
  ``lambda(t + 1) = [lambda(t) - eta eps(pi*(lambda(t)))]_+`` (Algorithm 1 with an exact Lagrangian
  maximiser and exact or sampled slacks), whose fixed point is the lambda* of the problem the dual steps see
  (the train prompts).
* ``lagrangian``: the best member of a policy class at lambda (:func:`analysis.next_token.classes.fit_lagrangian`,
  the exact Lagrangian of the train prompts maximised to convergence): nu of the class itself.
* ``dpo``: DPO on pseudo-labels in a class at a budget (K reference tokens per prompt, T epochs), with
  :func:`analysis.next_token.methods.train_method` (the laboratory's methods): nu of DPO.

Methods on every rung: one-shot at the plug-in lambda (``one_shot_plugin``) and at the train prompts' exact
lambda* (``one_shot_exact``), CAID with exact and with sampled dual steps (warm start at the plug-in
lambda, eta = beta, T iterations), and the negative controls pi_ref (``reference``, no training) and
DPO_h (``dpo_h``, lambda = 0). On the exact and lagrangian rungs also ``one_shot_oracle``: one-shot at the
held-out problem's own lambda*, the policy pi*_p(lambda*) of Theorem 4.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable

import numpy as np
import torch

from analysis.next_token.arms import Arm
from analysis.next_token.classes import LogitBiasPolicy, PolicyClass, class_trunk, fit_lagrangian, make_policy
from analysis.next_token.evaluation import TableProblem, table_means
from analysis.next_token.laboratory import Lab, Setting
from analysis.next_token.methods import train_method
from analysis.next_token.problem import exact_problem, sample_tokens
from llm.caid import Multipliers, inverse_cdf, run_caid
from theory import ConstrainedProblem, tilted_policy
from theory.dual import dual_hessian, evaluate_dual

__all__ = [
    "CAID", "ORACLE", "REFERENCE", "DialConfig", "Fitting", "Outcome", "Rung", "RungLab", "StepSize", "run_rung_caid",
]

REFERENCE = "reference"
"""The method name of the untrained control pi_ref."""
ORACLE = "one_shot_oracle"
"""One-shot at the held-out problem's lambda* (the hypothesis of Theorem 4)."""
CAID = (Arm.CAID_EXACT.value, Arm.CAID_SAMPLED.value)


class StepSize(str, enum.Enum):
    """CAID's dual step size eta on a rung.

    ``laboratory``: the laboratory's eta = beta (suits DPO, whose response to lambda is attenuated);
    ``curvature``: eta = 1 / hess D(lambda*) of the train prompts (one constraint), or the preconditioner
    hess D(lambda*)^-1 (two: ``llm.caid.Multipliers`` takes a matrix), the step under which dual descent on the
    exact tilt converges (with eta = beta it oscillates: here the tilt's g_1 moves by about 6.5 sigma per unit
    of lambda, so eta hess D > 2; a scalar step for two constraints converges slowly along g_2).
    """

    LABORATORY = "laboratory"
    CURVATURE = "curvature"


class Fitting(str, enum.Enum):
    """How a rung's policy is obtained from lambda (module docstring)."""

    EXACT = "exact"
    LAGRANGIAN = "lagrangian"
    DPO = "dpo"


@dataclasses.dataclass(frozen=True)
class Rung:
    """One rung of policy accuracy.

    Attributes:
        name: Folder and label (e.g. ``exact_tilt``, ``top_bias_2048``, ``dpo_logit_bias_k8_t4``).
        fit: How the policy is obtained.
        policy_class: The class (``None`` for the exact tilt).
        top_n: Tokens of the ``top_bias`` class.
        k: DPO's reference tokens per train prompt.
        epochs: DPO's epochs (one-shot) = CAID's iterations, one epoch each (dpo rungs).
        lr: DPO's Adam learning rate (the bias classes move in logit units, the MLP in weight units).
        iterations: CAID's iterations T on the exact and lagrangian rungs.
        from_laboratory: The rung whose runs the laboratory itself trains (read from its ``runs/``).
        step_size: CAID's eta (default: ``curvature`` on the exact and lagrangian rungs, ``laboratory`` on dpo).
    """

    name: str
    fit: Fitting
    policy_class: PolicyClass | None = None
    top_n: int | None = None
    k: int | None = None
    epochs: int | None = None
    lr: float | None = None
    iterations: int = 4
    from_laboratory: bool = False
    step_size: StepSize | None = None

    def __post_init__(self) -> None:
        """Check that the fields the fit needs are set."""
        if self.fit is not Fitting.EXACT and self.policy_class is None:
            raise ValueError(f"rung {self.name}: policy_class is required for a {self.fit.value} rung")
        if self.fit is Fitting.DPO and None in (self.k, self.epochs, self.lr):
            raise ValueError(f"rung {self.name}: a dpo rung needs k, epochs and lr")
        if self.policy_class is PolicyClass.TOP_BIAS and self.top_n is None:
            raise ValueError(f"rung {self.name}: the top_bias class needs top_n")

    @property
    def base(self) -> tuple:
        """What the non-CAID runs depend on: rungs equal here share them (they differ in CAID's T only)."""
        return self.fit, self.policy_class, self.top_n, self.k, self.epochs, self.lr, self.from_laboratory

    @property
    def step(self) -> StepSize:
        """CAID's step-size rule on this rung."""
        if self.step_size is not None:
            return self.step_size
        return StepSize.LABORATORY if self.fit is Fitting.DPO else StepSize.CURVATURE

    @property
    def budget(self) -> str:
        """The rung's budget in words: exact, converged fits, or DPO's K and T."""
        if self.fit is Fitting.DPO:
            return f"K={self.k},T={self.epochs}"
        return "exact" if self.fit is Fitting.EXACT else "converged"

    @property
    def caid_iterations(self) -> int:
        """T of CAID on this rung."""
        return self.epochs if self.fit is Fitting.DPO else self.iterations

    @property
    def class_name(self) -> str:
        """The class's name in tables (``tilt`` for the exact rung)."""
        if self.policy_class is None:
            return "tilt"
        if self.policy_class is PolicyClass.TOP_BIAS:
            return f"{self.policy_class.value}_{self.top_n}"
        return self.policy_class.value

    def methods(self, setting: Setting) -> list[str]:
        """The methods run on this rung for ``setting`` (module docstring)."""
        methods = [Arm.ONE_SHOT_PLUGIN.value, Arm.ONE_SHOT_EXACT.value, Arm.CAID_EXACT.value,
                   Arm.CAID_SAMPLED.value, Arm.DPO_H.value, REFERENCE]
        return methods if self.fit is Fitting.DPO else [*methods, ORACLE]

    def seed_free(self, method: str) -> bool:
        """Whether ``method``'s policy on this rung does not depend on the seed (computed once for all seeds)."""
        if method == REFERENCE:
            return True
        return self.fit is not Fitting.DPO and method in (Arm.ONE_SHOT_EXACT.value, ORACLE, Arm.DPO_H.value)


@dataclasses.dataclass(frozen=True)
class DialConfig:
    """The rungs of the dial.

    Attributes:
        rungs: The rungs, in order of decreasing accuracy (the dial's rows).
        fit_tol: Gradient tolerance of the lagrangian fits.
    """

    rungs: tuple[Rung, ...]
    fit_tol: float = 1e-5

    def __post_init__(self) -> None:
        """Rung names are folder names: unique."""
        names = [r.name for r in self.rungs]
        if len(set(names)) != len(names):
            raise ValueError(f"rungs: names must be unique, got {names}")

    def variant_of(self, rung: Rung) -> str | None:
        """The earlier rung whose non-CAID runs ``rung`` shares (it differs in CAID's T only), or None."""
        first = next(r for r in self.rungs if r.base == rung.base)
        return None if first.name == rung.name else first.name


@dataclasses.dataclass(frozen=True, eq=False)
class Outcome:
    """A method's policy on one rung.

    Attributes:
        held_out: ``(X_eval, V)`` the policy on the held-out prompts.
        lam: The multipliers it was obtained at (``None`` for pi_ref).
        trajectory: ``(T + 1, m)`` lambda(0..T) (CAID), or the constant lambda repeated.
        second_moment: Mean squared dual subgradient S^2 (0 without dual steps).
        fit_iterations: Total L-BFGS iterations (lagrangian rungs; 0 elsewhere).
        converged: Whether every fit met its tolerance (True off the lagrangian rungs).
    """

    held_out: np.ndarray
    lam: np.ndarray | None
    trajectory: np.ndarray
    second_moment: float
    fit_iterations: int = 0
    converged: bool = True


class _Learner:
    """A rung's side of the CAID loop (:class:`llm.caid.PrimalDual`).

    The primal step obtains the policy at lambda (the tilt, or the class's best member); the slack is measured
    exactly or from sampled tokens.
    """

    def __init__(self, respond: Callable[[np.ndarray], object], slack: Callable[[object], np.ndarray]) -> None:
        self.respond, self.measure, self.policy = respond, slack, None

    def fit(self, lam: np.ndarray, iteration: int) -> None:
        """Obtain the policy at ``lam``."""
        self.policy = self.respond(lam)

    def slack(self, iteration: int) -> np.ndarray:
        """The current policy's train-prompt slack."""
        return self.measure(self.policy)


def run_rung_caid(respond: Callable[[np.ndarray], object], lam0: np.ndarray, slack: Callable[[object], np.ndarray],
                  iterations: int, eta: float) -> tuple[object, np.ndarray, np.ndarray, float]:
    """CAID on a rung with :func:`llm.caid.run_caid`, as the laboratory's arms run it (Algorithm 2).

    T primal steps at lambda(0..T-1) with a dual step before each but the first, then the final policy's slack
    steps lambda once more (lambda(T) and S^2 enter Theorem 6).

    Args:
        respond: lambda -> the policy obtained at lambda (whatever ``slack`` reads).
        lam0: lambda(0).
        slack: The train-prompt constraint slack of a policy (exact or sampled).
        iterations: T.
        eta: Dual step size.

    Returns:
        ``(the last policy, the lambda it was obtained at, lambda(0..T), mean squared slack S^2)``.
    """
    learner = _Learner(respond, slack)
    multipliers = Multipliers(lam0, eta)
    done = run_caid(learner, multipliers, iterations)
    multipliers.step(learner.slack(iterations + 1))
    second_moment = float(np.mean([u @ u for u in multipliers.slacks]))
    return learner.policy, done[-1].lam, np.array(multipliers.trajectory), second_moment


class _Tilt:
    """The exact tilt pi*(lambda) on the train and held-out prompts (``theory.dual``)."""

    def __init__(self, train: ConstrainedProblem, held_out: ConstrainedProblem, lam: np.ndarray) -> None:
        self.train, self.held, self.lam = train, held_out, lam

    def train_gain(self) -> np.ndarray:
        """``(m,)`` E_x [E_pi g_i - E_ref g_i] on the train prompts: grad D(lambda) of the zero-threshold problem."""
        return evaluate_dual(self.train, self.lam, order=1).gradient

    def train_rows(self, rows: np.ndarray) -> np.ndarray:
        """pi*(lambda) on some train prompts."""
        return tilted_policy(self.train, self.lam)[rows]

    def held_out(self) -> np.ndarray:
        """pi*(lambda) on the held-out prompts."""
        return tilted_policy(self.held, self.lam)


class _Member:
    """A member of a policy class on the cached trunks."""

    def __init__(self, policy: torch.nn.Module, trunks: tuple, tables: np.ndarray, p_ref: np.ndarray,
                 ref_means: np.ndarray) -> None:
        """``p_ref``: pi_ref on the train prompts; ``ref_means``: ``(X_train, m)`` E_ref g_i there."""
        self.policy, self.trunks, self.tables, self.p_ref, self.ref_means = policy, trunks, tables, p_ref, ref_means

    def train_gain(self) -> np.ndarray:
        """``(m,)`` E_x [E_pi g_i - E_ref g_i] on the train prompts."""
        if isinstance(self.policy, LogitBiasPolicy):
            means = self.policy.expectations(self.p_ref, self.tables, self.ref_means)
        else:
            means = table_means(self.policy.distribution(self.trunks[0]), self.tables)
        return (means - self.ref_means).mean(axis=0)

    def train_rows(self, rows: np.ndarray) -> np.ndarray:
        """The policy on some train prompts."""
        return self.policy.distribution(self.trunks[0].rows(rows))

    def held_out(self) -> np.ndarray:
        """The policy on the held-out prompts."""
        return self.policy.distribution(self.trunks[1])


class RungLab:
    """The laboratory seen by the dial: its world and optima, with the arrays every rung reuses cached."""

    def __init__(self, lab: Lab, fit_tol: float = 1e-8) -> None:
        """Wrap ``lab``; ``fit_tol`` is the gradient tolerance of the lagrangian fits."""
        self.lab, self.fit_tol = lab, fit_tol
        self.beta = lab.config.training.beta
        self._plug_in: dict[tuple[str, int], np.ndarray] = {}
        self._held_out: dict[str, TableProblem] = {}
        self._tokens: dict[tuple[int, int], np.ndarray] = {}

    def warm(self) -> None:
        """Compute what every rung reuses (before worker processes fork, so that they share it)."""
        _ = self.trunks, self.p_ref_train
        for s in self.lab.settings:
            self.held_out(s), self.problems(s.utilities), self._train_hessian(s.name, s.utilities)
            for seed in self.lab.config.seeds:
                self.start(s, Arm.ONE_SHOT_PLUGIN.value, seed)

    @functools.cached_property
    def trunks(self) -> tuple:
        """``(train, held-out)`` :class:`~analysis.next_token.classes.ClassTrunk` of the world."""
        world = self.lab.world
        return class_trunk(world.trunk_train, self.lab.ref_train), class_trunk(world.trunk_eval, self.lab.ref_eval)

    @functools.cached_property
    def p_ref_train(self) -> np.ndarray:
        """``(X_train, V)`` pi_ref on the train prompts."""
        return self.lab.p_train

    @functools.cache  # noqa: B019 - one RungLab per dial run; the problems are reused by every run
    def problems(self, utilities: tuple[int, ...]) -> tuple[ConstrainedProblem, ConstrainedProblem]:
        """``(train, held-out)`` problems with these utilities and zero thresholds (for tilts and gains)."""
        zeros = np.zeros(len(utilities))
        return (exact_problem(self.lab.world, utilities, zeros, self.beta, train=True),
                exact_problem(self.lab.world, utilities, zeros, self.beta))

    def held_out(self, setting: Setting) -> TableProblem:
        """The setting's held-out problem with its reference moments (for ``evaluation.measure``)."""
        if setting.name not in self._held_out:
            tables = self.lab.world.scores[[0, *setting.utilities]]
            self._held_out[setting.name] = TableProblem.of(self.lab.optima[setting.name][0], tables)
        return self._held_out[setting.name]

    def eta(self, rung: Rung, setting: Setting) -> float | np.ndarray:
        """CAID's dual step size on ``rung`` for ``setting`` (:class:`StepSize`): a number, or an (m, m) matrix."""
        if rung.step is StepSize.LABORATORY:
            return self.lab.config.training.dual_step_size
        hessian = self._train_hessian(setting.name, setting.utilities)
        return 1.0 / float(hessian[0, 0]) if len(hessian) == 1 else np.linalg.inv(hessian)

    @functools.cache  # noqa: B019 - see problems
    def _train_hessian(self, name: str, utilities: tuple[int, ...]) -> np.ndarray:
        return dual_hessian(self.problems(utilities)[0], self.lab.optima[name][1])

    def slack(self, setting: Setting, sampled: bool, seed: int) -> Callable[[object], np.ndarray]:
        """The train-prompt slack E_x E_pi h_i of a policy: exact, or from sampled tokens (as the laboratory)."""
        tables = self.lab.world.scores[np.array(setting.utilities)]
        thresholds, training = np.array(setting.thresholds), self.lab.config.training
        rng = np.random.default_rng([seed, 17])
        n_rows = min(training.dual_prompts, self.lab.config.n_train)

        def exact(policy: _Tilt | _Member) -> np.ndarray:
            return policy.train_gain() - thresholds

        def sampled_slack(policy: _Tilt | _Member) -> np.ndarray:
            rows = rng.choice(self.lab.config.n_train, size=n_rows, replace=False)
            tokens = inverse_cdf(policy.train_rows(rows), rng.random((n_rows, training.dual_samples)))
            ref_means = table_means(self.p_ref_train[rows], tables).T  # (m, rows)
            return (tables[:, tokens].mean(axis=2) - ref_means).mean(axis=1) - thresholds

        return sampled_slack if sampled else exact

    def start(self, setting: Setting, method: str, seed: int) -> np.ndarray:
        """The method's lambda (one-shot) or lambda(0) (CAID)."""
        opt, lam_train = self.lab.optima[setting.name]
        if method == Arm.DPO_H.value:
            return np.zeros(len(setting.utilities))
        if method == Arm.ONE_SHOT_EXACT.value:
            return lam_train
        if method == ORACLE:
            return opt.solution.lam
        if (setting.name, seed) not in self._plug_in:
            self._plug_in[setting.name, seed] = self.lab.plug_in_lam(setting, seed)
        return self._plug_in[setting.name, seed]

    def obtain(self, rung: Rung, setting: Setting, method: str, seed: int) -> Outcome:
        """The policy of ``method`` at ``seed`` for ``setting`` on ``rung`` (module docstring)."""
        m = len(setting.utilities)
        if method == REFERENCE:
            return Outcome(np.exp(self.lab.ref_eval), None, np.zeros((1, m)), 0.0)
        lam0 = self.start(setting, method, seed)
        if rung.fit is Fitting.DPO:
            return self._dpo(rung, setting, method, lam0, seed)
        fits: list = []
        if rung.fit is Fitting.EXACT:
            train, held_out = self.problems(setting.utilities)

            def respond(lam: np.ndarray) -> _Tilt:
                return _Tilt(train, held_out, lam)
        else:
            respond = self._class_responder(rung, setting, fits)
        if method in CAID:
            slack = self.slack(setting, method == Arm.CAID_SAMPLED.value, seed)
            policy, lam, trajectory, s2 = run_rung_caid(respond, lam0, slack, rung.iterations, self.eta(rung, setting))
        else:
            policy, lam, trajectory, s2 = respond(lam0), lam0, np.array([lam0, lam0]), 0.0
        return Outcome(policy.held_out(), lam, trajectory, s2, sum(f.iterations for f in fits),
                       all(f.converged for f in fits))

    def _class_responder(self, rung: Rung, setting: Setting, fits: list) -> Callable[[np.ndarray], _Member]:
        world, lab = self.lab.world, self.lab
        policy = make_policy(rung.policy_class, lab.model, lab.ref_train, rung.top_n)
        tables = world.scores[np.array(setting.utilities)]
        member = _Member(policy, self.trunks, tables, self.p_ref_train, table_means(self.p_ref_train, tables))

        def respond(lam: np.ndarray) -> _Member:
            composite = world.scores[0] + lam @ tables
            fits.append(fit_lagrangian(policy, self.trunks[0], composite, lab.ref_train, self.beta, tol=self.fit_tol,
                                       p_ref=self.p_ref_train))
            return member

        return respond

    def _dpo(self, rung: Rung, setting: Setting, method: str, lam0: np.ndarray, seed: int) -> Outcome:
        lab = self.lab
        train_trunk, eval_trunk = self.trunks
        if (rung.k, seed) not in self._tokens:
            self._tokens[rung.k, seed] = sample_tokens(lab.world, rung.k, seed)
        data = dataclasses.replace(lab.training_data(setting, seed, rung.k, self._tokens[rung.k, seed]),
                                   trunk=train_trunk)
        settings = dataclasses.replace(lab.config.training, iterations=rung.epochs, lr=rung.lr,
                                       dual_step_size=self.eta(rung, setting))
        policy = make_policy(rung.policy_class, lab.model, lab.ref_train, rung.top_n)
        torch.set_grad_enabled(True)
        result = train_method(policy, data, Arm(method), lam0, np.array(setting.thresholds), settings, seed)
        return Outcome(policy.distribution(eval_trunk), result.lam, result.trajectory, result.second_moment)
