"""Templated review openings for completion-mode sampling: the ``reviews`` prompt source.

The powered multi-token study continues review openings with the model in completion mode (no chat template):
an offline analogue of the controlled-sentiment task of the DPO paper, with SmolLM2 in place of GPT-2 and VADER
in place of a sentiment classifier (no review corpus or sentiment-classifier weights ship as a wheel). The
design's objectives are r = relevance to the prompt and the utilities positivity (VADER) and simplicity, in the
constrained problem (P-CA), solved by the methods of Algorithms 1-3 (the pilot in ``benchmarks/README.md`` found
relevance and positivity uncorrelated within prompts, which questions that assignment).

The grid is :data:`REVIEW_OPENERS` x :data:`REVIEW_SUBJECTS` (16 x 24 = 384 prompts). More than half of the
openers carry a negative cue ("I wanted to like ..., but") to pull the reference continuations toward negative
reviews, so that positivity has room to rise (VADER is bounded by 1, and the thresholds b are improvements
over the reference). On the pilot's pool SmolLM2's continuations still averaged a VADER score of +0.18, with
a K = 6 plug-in headroom of 1.24 within-prompt SDs.

Every opener ends mid-sentence without a trailing space, so the first sampled token is a word that
carries its own leading space (how SmolLM2's tokenizer writes words), and every subject is a singular noun
phrase that reads correctly after any opener.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from llm.prompts.prompt_set import PromptSet

__all__ = ["REVIEW_OPENERS", "REVIEW_SUBJECTS", "ReviewOpener", "review_grid", "review_prompts"]


@dataclasses.dataclass(frozen=True)
class ReviewOpener:
    """One review opening with a ``{subject}`` slot.

    Attributes:
        template: text with exactly one ``{subject}`` field, ending mid-sentence (no trailing space).
        negative_cue: whether the opening steers the continuation toward a negative review.
    """

    template: str
    negative_cue: bool

    def __post_init__(self) -> None:
        if self.template.count("{subject}") != 1 or self.template != self.template.strip():
            raise ValueError(f"review opener {self.template!r}: needs exactly one {{subject}} and no outer spaces")


REVIEW_OPENERS: tuple[ReviewOpener, ...] = (
    ReviewOpener("Review of {subject}: I had high hopes, but", True),
    ReviewOpener("I wanted to like {subject}, but", True),
    ReviewOpener("I was disappointed by {subject} because", True),
    ReviewOpener("Two stars. I expected more from {subject}, and", True),
    ReviewOpener("I almost returned {subject}, but", True),
    ReviewOpener("My friends warned me about {subject}, and", True),
    ReviewOpener("The worst part about {subject} is", True),
    ReviewOpener("I can't say I'm a fan of {subject}. The", True),
    ReviewOpener("After all the hype, {subject} turned out to be", True),
    ReviewOpener("After a week with {subject}, my honest opinion is that", False),
    ReviewOpener("Here is my review of {subject}. To be fair,", False),
    ReviewOpener("Honestly, {subject} was", False),
    ReviewOpener("I've tried {subject} three times now, and each time", False),
    ReviewOpener("What I will remember about {subject} is", False),
    ReviewOpener("Customer review of {subject}: the first thing I noticed was", False),
    ReviewOpener("If you are thinking about {subject}, you should know that", False),
)
"""16 openings, 9 with a negative cue."""

REVIEW_SUBJECTS: tuple[str, ...] = (
    "the new coffee maker",
    "this budget laptop",
    "the hotel by the train station",
    "the Italian restaurant on Main Street",
    "this mystery novel",
    "the new superhero movie",
    "this pair of running shoes",
    "the airline's economy class",
    "the local gym",
    "this video game",
    "the city's new art museum",
    "the dentist's office downtown",
    "the car we rented for the trip",
    "this vacuum cleaner",
    "the weekend cooking class",
    "the neighborhood bakery",
    "this streaming service",
    "the concert last night",
    "this electric toothbrush",
    "the ski resort",
    "the latest phone update",
    "this board game",
    "the grocery delivery service",
    "the campground by the lake",
)
"""24 singular subjects: products, places, services and works."""


def review_grid() -> tuple[str, ...]:
    """Every opener x subject prompt, opener-major (all subjects of the first opener, then the second, ...)."""
    return tuple(o.template.format(subject=s) for o in REVIEW_OPENERS for s in REVIEW_SUBJECTS)


def review_prompts(n: int | None = None, seed: int = 0) -> PromptSet:
    """``n`` distinct review openings, sampled without replacement from the grid (all of it when ``n`` is None).

    The sample and its order depend only on ``seed`` (numpy PCG64), so a limit draws openers and subjects
    evenly in expectation; :func:`llm.prompts.split` then splits by prompt text.

    Args:
        n: number of prompts, 1 <= n <= 384; None means the whole grid, shuffled.
        seed: sampling seed.

    Returns:
        A ``PromptSet`` named ``"reviews"`` without fixed responses.

    Raises:
        ValueError: if ``n`` is not an integer in [1, grid size].
    """
    grid = review_grid()
    size = len(grid) if n is None else n
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= len(grid):
        raise ValueError(
            f"review_prompts: n must be an integer in [1, {len(grid)}] (openers x subjects) or None, got {n!r}"
        )
    picks = np.random.default_rng(seed).choice(len(grid), size=size, replace=False)
    return PromptSet("reviews", tuple(grid[int(i)] for i in picks))
