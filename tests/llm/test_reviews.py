import itertools
import string

import pytest

from llm import prompts as data
from llm.prompts import reviews
from llm.prompts.reviews import REVIEW_OPENERS, REVIEW_SUBJECTS, ReviewOpener, review_grid, review_prompts
from tests.markers import needs_smollm2


def test_grid_is_every_opener_with_every_subject():
    # Rebuilt by plain string splicing (not str.format) from the two tables.
    expected = []
    for opener in REVIEW_OPENERS:
        head, tail = opener.template.split("{subject}")
        expected += [head + subject + tail for subject in REVIEW_SUBJECTS]
    assert review_grid() == tuple(expected)
    assert len(REVIEW_OPENERS) == 16 and len(REVIEW_SUBJECTS) == 24
    assert len(set(expected)) == 384  # no two (opener, subject) cells collide


def test_openers_lean_negative_and_read_as_openings():
    assert sum(o.negative_cue for o in REVIEW_OPENERS) == 9
    for opener in REVIEW_OPENERS:
        assert opener.template == opener.template.strip()
        # Ends mid-sentence: the continuation starts with a word (its own leading space), never after a period.
        assert opener.template[-1] not in ".!?"
    for subject in REVIEW_SUBJECTS:
        assert subject == subject.strip() and subject[0] in string.ascii_lowercase  # reads mid-sentence


@pytest.mark.parametrize("template", ["no slot here", "{subject} and {subject}", " {subject} padded "])
def test_opener_rejects_malformed_templates(template):
    with pytest.raises(ValueError, match="exactly one"):
        ReviewOpener(template, False)


def test_sample_is_seeded_distinct_and_from_the_grid():
    grid = set(review_grid())
    a, b, c = review_prompts(100, seed=3), review_prompts(100, seed=3), review_prompts(100, seed=4)
    assert a == b and a.prompts != c.prompts
    assert len(set(a.prompts)) == 100 and set(a.prompts) <= grid
    assert a.name == "reviews" and a.responses is None
    full = review_prompts(None, seed=0)
    assert sorted(full.prompts) == sorted(grid)


@pytest.mark.parametrize("n", [0, 385, -1, 2.5, True])
def test_sample_size_out_of_range_is_refused(n):
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 384\]"):
        review_prompts(n, seed=0)


def test_prompt_set_spec_reviews():
    assert data.prompt_set("reviews", 50, seed=7) == review_prompts(50, seed=7)
    assert len(data.prompt_set(" reviews ", None, seed=1)) == 384
    with pytest.raises(ValueError, match="reviews"):  # the valid forms listed in the error include it
        data.prompt_set("review", None, seed=0)


def test_split_keeps_prompts_on_one_side():
    train, test = data.split(reviews.review_prompts(None, seed=0), 0.5, seed=0)
    assert len(train) + len(test) == 384 and not set(train.prompts) & set(test.prompts)


@needs_smollm2
def test_prompt_tokens_are_a_prefix_of_prompt_plus_continuation():
    # Completion mode: the sampled continuation must extend the prompt's tokens, not re-tokenize its end.
    from llm.models import load_tokenizer

    tokenizer = load_tokenizer()
    for prompt, word in itertools.product(review_grid()[::23], [" it", " the", " was"]):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        joined = tokenizer(prompt + word, add_special_tokens=False)["input_ids"]
        assert joined[: len(ids)] == ids, prompt
