"""The ``benign`` prompts: harmless everyday requests built from templates x topics.

No harmless prompt set ships in any pip package, so the grid is written here; offline and deterministic.
"""

from __future__ import annotations

import numpy as np

from llm.prompts.prompt_set import PromptSet

__all__ = ["BENIGN_TEMPLATES", "BENIGN_TOPICS", "benign_prompts"]

# Every template takes a gerund phrase ("baking bread") and stays grammatical with every topic.
BENIGN_TEMPLATES: tuple[str, ...] = (
    "Give me three tips for {topic}.",
    "Explain {topic} to a ten-year-old.",
    "What are the most common beginner mistakes when {topic}?",
    "What do I need to get started with {topic}?",
    "How can I get better at {topic}?",
    "Write a short, cheerful poem about {topic}.",
    "Make a simple step-by-step plan for {topic}.",
    "Share a few fun facts related to {topic}.",
    "How much time should a beginner set aside each week for {topic}?",
    "Suggest a good first goal for someone interested in {topic}.",
    "Why do so many people enjoy {topic}?",
    "Write a friendly two-sentence note encouraging a friend who is {topic}.",
    "What is one small habit that helps with {topic}?",
    "Summarize the basics of {topic} in five bullet points.",
    "Recommend a few beginner-friendly resources for {topic}.",
    "How can I make {topic} more fun for kids?",
    "What should be on my checklist before {topic}?",
    "Describe a pleasant afternoon spent {topic}.",
    "How can I save money when {topic}?",
    "Write a short dialogue between two friends about {topic}.",
    "What is a realistic way to track my progress in {topic}?",
    "Give me a motivational quote and one practical tip for {topic}.",
    "How can {topic} fit into a busy weekly schedule?",
    "What questions should I ask an expert about {topic}?",
)

BENIGN_TOPICS: tuple[str, ...] = (
    "baking bread",
    "learning guitar",
    "growing tomatoes",
    "running a first 5K",
    "training a puppy",
    "brewing coffee at home",
    "planning a weekend camping trip",
    "knitting a scarf",
    "learning a new language",
    "organizing a small closet",
    "painting with watercolors",
    "starting a vegetable garden",
    "cooking a vegetarian dinner",
    "taking better photos with a phone",
    "studying for a math exam",
    "writing a thank-you letter",
    "keeping houseplants alive",
    "riding a bicycle around town",
    "budgeting for groceries",
    "making homemade pizza",
    "learning to swim",
    "birdwatching in a local park",
    "doing a morning stretching routine",
    "decorating a birthday cake",
    "building a simple bookshelf",
    "reading more books",
    "playing chess",
    "composting kitchen scraps",
    "hosting a board game night",
    "folding paper airplanes",
    "learning to juggle",
    "cleaning a kitchen quickly",
    "packing for a beach vacation",
    "practicing the piano",
    "making fruit smoothies",
    "keeping a daily journal",
    "learning to draw portraits",
    "sewing on a button",
    "flying a kite",
    "baking chocolate chip cookies",
    "caring for a goldfish",
    "planning a family picnic",
    "solving a Rubik's cube",
    "stargazing with binoculars",
)


def benign_prompts(n: int, seed: int) -> PromptSet:
    """``n`` distinct harmless everyday requests, sampled without replacement from templates × topics.

    The grid has ``len(BENIGN_TEMPLATES) * len(BENIGN_TOPICS)`` (24 × 44 = 1056) prompts; the sample and its
    order depend only on ``seed`` (numpy PCG64).

    Args:
        n: number of prompts, 1 <= n <= grid size.
        seed: sampling seed.

    Returns:
        A ``PromptSet`` named ``"benign"``.

    Raises:
        ValueError: if ``n`` is outside [1, grid size].
    """
    grid = [template.format(topic=topic) for template in BENIGN_TEMPLATES for topic in BENIGN_TOPICS]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(grid):
        raise ValueError(f"benign_prompts: n must be an integer in [1, {len(grid)}] (templates × topics), got {n!r}")
    picks = np.random.default_rng(seed).choice(len(grid), size=n, replace=False)
    return PromptSet("benign", tuple(grid[int(i)] for i in picks))
