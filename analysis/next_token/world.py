"""The one-token world: prompts, SmolLM2's next-token softmax pi_ref(.|x), and per-token score tables.

The response to a prompt is a single token v of the model's vocabulary, so pi(.|x) is the model's full
next-token softmax and every expectation E_pi f(x, .) = sum_v pi(v|x) f(x, v) is an exact finite sum. This
is the (U-CA) problem of Sec. 2 with Y = the vocabulary, on a real pretrained LM.

Prompts are frames x subjects in completion mode (no chat template), every frame ending in an opening
quote (``My one-word review of {subject}: "``), so the next token starts the one-word answer.

Scores (all token-only tables of shape ``(V,)``, computed once from the decoded token text ``t = decode(v)``;
``w = t.strip()``):

* g_1 (``valence``): VADER compound valence of ``w``. Sub-word pieces score as their own string (VADER's
  lexicon rarely knows them: 0); punctuation, whitespace, special tokens and EOS score 0 (neutral).
* g_2 (``brevity``): minus the number of letters in ``w``. Tokens without letters (punctuation, digits,
  whitespace, EOS) have 0 letters, the largest value.
* r (``criticism``): VADER's negative-affect share ``neg`` of ``w``, in [0, 1]; 0 for tokens VADER does
  not know (non-words included). It conflicts with g_1 by construction (a critic's reward against a
  positivity constraint, the analogue of helpfulness vs safety in Sec. 5). MiniLM similarity of subject
  and word was measured first: its within-prompt correlation with g_1 under pi_ref is about 0 (-0.005 on
  32 prompts), which gives a flat trade-off curve; so was specificity -log mean pi_ref(v) (-0.02).

Each table is standardised by its pooled within-prompt SD under pi_ref on the train prompts,
``sigma_f = sqrt(E_x Var_{pi_ref(.|x)} f)``, so beta, thresholds and step sizes are in sigma units.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from analysis.next_token.policy import LastBlockPolicy, Trunk, encode_trunk
from llm.run_files import write_atomic

__all__ = [
    "FRAMES",
    "SCORE_NAMES",
    "SUBJECTS",
    "World",
    "WorldError",
    "atomic_savez",
    "load_or_build_world",
    "make_split",
    "normalised",
    "reference_logprobs",
    "token_score_tables",
    "within_prompt_correlation",
    "within_prompt_sd",
]

FRAMES: tuple[str, ...] = (
    'My one-word review of {s}: "',
    'One word to describe {s}: "',
    'In a single word, {s} is "',
    'My friend summed up {s} in one word: "',
    'Asked about {s}, she answered with one word: "',
    'The critic described {s} in a single word: "',
    'If I had to pick one word for {s}, it would be "',
    'His one-word verdict on {s}: "',
)
SUBJECTS: tuple[str, ...] = (
    "the movie", "the new phone", "my boss", "the weather today", "this restaurant", "the concert", "Paris",
    "the election", "the hotel", "the novel", "my neighbour", "the football match", "the museum", "the train ride",
    "the coffee", "the lecture", "the video game", "the wedding", "the hospital", "the new law", "the album",
    "the beach", "the job interview", "the pizza", "the airline", "the school", "the first date", "the car",
    "the software update", "the city", "the exam", "the party", "the flight", "the dentist", "the theme park",
    "the sequel", "the laptop", "the holiday", "the meeting", "the podcast", "the bakery", "the storm",
    "the gym", "the play", "the debate", "the zoo", "the mountain hike", "the customer service",
    "the band", "the documentary", "the bookshop", "the festival", "the apartment", "the bus", "the cake",
    "the conference", "the garden", "the TV show", "the manager", "the sandwich", "the campsite", "the course",
    "the speech", "the painting",
)  # fmt: skip
SCORE_NAMES: tuple[str, ...] = ("criticism", "valence", "brevity")
"""Rows of the score table: the reward r, then the utilities g_1, g_2."""

_FORMAT = 2
_FLOAT = np.float32


class WorldError(ValueError):
    """A world file is missing, malformed or does not match the requested world."""


def make_split(n_train: int, n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """Draw disjoint train and held-out prompts from FRAMES x SUBJECTS, reproducibly.

    Args:
        n_train: Train prompts (the DPO pairs and dual steps use them).
        n_eval: Held-out prompts (every policy is evaluated exactly on them).
        seed: Seed of the permutation.

    Returns:
        ``(train, held_out)`` prompt lists.
    """
    pool = [f.format(s=s) for f in FRAMES for s in SUBJECTS]
    if n_train < 1 or n_eval < 1 or n_train + n_eval > len(pool):
        raise ValueError(f"n_train, n_eval: need >= 1 each and at most {len(pool)} together, got {n_train}, {n_eval}")
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:n_train]], [pool[i] for i in order[n_train : n_train + n_eval]]


def reference_logprobs(model: torch.nn.Module, prompt_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(log pi_ref, trunk)``: next-token log-softmax ``(X, V)`` and the trunk states it came from.

    The trunk ``(X, d)`` is :mod:`analysis.next_token.policy`'s cached state; one forward pass gives both.
    """
    trunk = encode_trunk(model, prompt_ids)
    with torch.no_grad():
        logits = LastBlockPolicy(model).logits(trunk)
    return torch.log_softmax(logits.double(), dim=-1).numpy(), trunk.hidden.numpy()


def token_score_tables(token_texts: Sequence[str]) -> np.ndarray:
    """``(3, V)`` raw scores (criticism, valence, -letters) of every token (module docstring for non-words)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    out = np.zeros((3, len(token_texts)))
    for v, text in enumerate(token_texts):
        word = text.strip()
        if not word:
            continue
        if any(c.isalpha() for c in word):
            scores = analyzer.polarity_scores(word)
            out[0, v], out[1, v] = scores["neg"], scores["compound"]
        out[2, v] = -sum(c.isalpha() for c in word)
    return out


def within_prompt_sd(ref_logprobs: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``(k,)`` pooled within-prompt SDs sqrt(E_x Var_{pi_ref(.|x)} f) of each row of a ``(k, V)`` table."""
    p = np.exp(ref_logprobs)
    mean = p @ table.T  # (X, k)
    second = p @ (table**2).T
    return np.sqrt(np.maximum(second - mean**2, 0.0).mean(axis=0))


def within_prompt_correlation(ref_logprobs: np.ndarray, f: np.ndarray, g: np.ndarray) -> float:
    """Pooled within-prompt correlation E_x Cov_x(f, g) / sqrt(E_x Var_x f E_x Var_x g) under pi_ref."""
    p = np.exp(ref_logprobs)
    mf, mg = p @ f, p @ g
    cov = (p @ (f * g) - mf * mg).mean()
    var_f, var_g = (p @ f**2 - mf**2).mean(), (p @ g**2 - mg**2).mean()
    return float(cov / np.sqrt(var_f * var_g))


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """Prompts, exact reference distributions and standardised score tables.

    Attributes:
        train_prompts: Prompts for DPO pairs and dual steps.
        eval_prompts: Held-out prompts for the exact evaluation.
        train_ids: Token ids of each train prompt (no special tokens added).
        eval_ids: Token ids of each held-out prompt.
        ref_train: ``(X_train, V)`` float32 log pi_ref on train prompts.
        ref_eval: ``(X_eval, V)`` float32 log pi_ref on held-out prompts.
        scores: ``(3, V)`` standardised tables, rows :data:`SCORE_NAMES` (r, g_1, g_2).
        scale: ``(3,)`` the pooled within-prompt SDs the raw tables were divided by.
        trunk_train: Cached trunk of the train prompts (:class:`~analysis.next_token.policy.Trunk`).
        trunk_eval: Cached trunk of the held-out prompts.
    """

    train_prompts: tuple[str, ...]
    eval_prompts: tuple[str, ...]
    train_ids: tuple[tuple[int, ...], ...]
    eval_ids: tuple[tuple[int, ...], ...]
    ref_train: np.ndarray
    ref_eval: np.ndarray
    scores: np.ndarray
    scale: np.ndarray
    trunk_train: Trunk
    trunk_eval: Trunk

    @property
    def vocab_size(self) -> int:
        """V, the number of possible responses."""
        return self.scores.shape[1]

    def correlation(self, i: int, j: int) -> float:
        """Within-prompt correlation of score rows ``i`` and ``j`` under pi_ref on the train prompts."""
        return within_prompt_correlation(self.ref_train.astype(np.float64), self.scores[i], self.scores[j])


def normalised(logprobs: np.ndarray) -> np.ndarray:
    """Float64 rows renormalised to sum to one in probability (float32 storage rounds them by ~1e-7)."""
    from scipy.special import logsumexp

    out = np.asarray(logprobs, dtype=np.float64)
    return out - logsumexp(out, axis=1, keepdims=True)


def _key(model_id: str, train: Sequence[str], held_out: Sequence[str], vocab: int) -> str:
    text = json.dumps({"format": _FORMAT, "model": model_id, "train": list(train), "eval": list(held_out), "V": vocab})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` atomically (:func:`llm.run_files.write_atomic`)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def _read_world(
    path: Path, key: str, train: Sequence[str], held_out: Sequence[str], vocab: int, width: int
) -> dict[str, np.ndarray]:
    fix = f"delete {path} to rebuild it"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise WorldError(f"{path}: not a readable npz file ({exc}); {fix}") from exc
    need = {"key", "ref_train", "ref_eval", "scores", "scale", "trunk_train", "trunk_eval"}
    if not need <= arrays.keys():
        raise WorldError(f"{path}: missing arrays {sorted(need - arrays.keys())}; {fix}")
    if str(arrays["key"]) != key:
        raise WorldError(f"{path}: built for another world (key {arrays['key']}, expected {key}); {fix}")
    shapes = {
        "ref_train": (len(train), vocab), "ref_eval": (len(held_out), vocab), "scores": (3, vocab), "scale": (3,),
        "trunk_train": (len(train), width), "trunk_eval": (len(held_out), width),
    }  # fmt: skip
    for name, shape in shapes.items():
        a = arrays[name]
        if a.shape != shape or a.dtype.kind != "f" or not np.all(np.isfinite(a)):
            raise WorldError(f"{path}: {name} has shape {a.shape} / non-finite values, expected finite {shape}; {fix}")
    for name in ("ref_train", "ref_eval"):
        total = np.exp(arrays[name].astype(np.float64)).sum(axis=1)
        if np.max(np.abs(total - 1)) > 1e-4:
            raise WorldError(f"{path}: {name} rows do not sum to one (worst {total.min():.6g}); {fix}")
    if np.any(arrays["scale"] <= 0):
        raise WorldError(f"{path}: scale must be positive, got {arrays['scale'].tolist()}; {fix}")
    return arrays


def load_or_build_world(
    model: torch.nn.Module,
    tokenizer: object,
    train: Sequence[str],
    held_out: Sequence[str],
    cache_dir: Path,
    model_id: str,
) -> World:
    """The world for these prompts, read from its content-keyed cache file or built once and cached.

    Args:
        model: The reference causal LM (SmolLM2, or a tiny model in tests).
        tokenizer: Its tokenizer (``__call__`` and ``decode``).
        train: Train prompts.
        held_out: Held-out prompts.
        cache_dir: Folder of cached worlds (``<cache root>/next_token``).
        model_id: Names the model in the cache key (a different model never reuses a file).

    Returns:
        The :class:`World`.
    """
    vocab, width = model.get_output_embeddings().weight.shape
    key = _key(model_id, train, held_out, vocab)
    path = Path(cache_dir) / f"world-{key}.npz"
    train_ids = tuple(tuple(tokenizer(p, add_special_tokens=False).input_ids) for p in train)
    eval_ids = tuple(tuple(tokenizer(p, add_special_tokens=False).input_ids) for p in held_out)
    arrays = None
    if path.exists():
        try:
            arrays = _read_world(path, key, train, held_out, vocab, width)
        except WorldError:
            arrays = None  # rebuilt below; the bad file is replaced atomically
    if arrays is None:
        (ref_train, trunk_train), (ref_eval, trunk_eval) = (reference_logprobs(model, ids) for ids in
                                                            (train_ids, eval_ids))
        raw = token_score_tables([tokenizer.decode([v]) for v in range(vocab)])
        scale = within_prompt_sd(ref_train, raw)
        arrays = {
            "key": np.array(key), "ref_train": ref_train.astype(_FLOAT), "ref_eval": ref_eval.astype(_FLOAT),
            "scores": raw / scale[:, None], "scale": scale, "trunk_train": trunk_train, "trunk_eval": trunk_eval,
        }  # fmt: skip
        atomic_savez(path, **arrays)
    return World(
        tuple(train), tuple(held_out), train_ids, eval_ids, arrays["ref_train"], arrays["ref_eval"],
        np.asarray(arrays["scores"], np.float64), np.asarray(arrays["scale"], np.float64),
        Trunk(torch.as_tensor(arrays["trunk_train"], dtype=torch.float32)),
        Trunk(torch.as_tensor(arrays["trunk_eval"], dtype=torch.float32)),
    )  # fmt: skip
