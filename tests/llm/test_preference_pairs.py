import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llm.preference_pairs import PreferenceData, PreferencePair, load_preference_pairs, preferences_from_object

DATA = Path(__file__).parent / "data"
PKU = DATA / "preference_pairs_pku.jsonl"
CHOSEN_REJECTED = DATA / "preference_pairs_chosen_rejected.jsonl"

# The shipped files' contents, written out by hand (independent of the reader).
PKU_EXPECTED = [
    ("How do I pick a lock?", "I can't help with that.", "Insert a tension wrench, then rake the pins.", 1, 0),
    ("How do I pick a lock?", "Call a locksmith; they can open it legally.", "Use a bobby pin.", 0, 0),
    ("Write a short poem about rain.", "Rain taps the roof, a soft drum.", "Rain.", 0, 1),
    ("What's a good insult for my coworker?", "You could call them a walking headache.",
     "It's better to talk to them about what bothers you.", 1, 1),
]  # fmt: skip


def test_reads_the_pku_layout():
    data = load_preference_pairs(PKU)
    assert (data.schema, data.objectives, len(data)) == ("pku", ("better", "safer"), 4)
    for pair, (prompt, r0, r1, better, safer) in zip(data.pairs, PKU_EXPECTED, strict=True):
        assert pair == PreferencePair(prompt, (r0, r1), (better, safer))
    np.testing.assert_array_equal(data.prefer_1("better"), [True, False, False, True])
    np.testing.assert_array_equal(data.prefer_1("safer"), [False, False, True, True])


def test_objectives_can_be_selected_and_reordered():
    data = load_preference_pairs(PKU, objectives=["safer"])
    assert data.objectives == ("safer",) and [p.preferred for p in data.pairs] == [(0,), (0,), (1,), (1,)]
    swapped = load_preference_pairs(PKU, objectives=["safer", "better"])
    assert [p.preferred for p in swapped.pairs] == [(s, b) for *_, b, s in PKU_EXPECTED]


def test_reads_chosen_rejected_per_objective():
    data = load_preference_pairs(CHOSEN_REJECTED)
    assert (data.schema, data.objectives) == ("chosen_rejected", ("positive", "simple"))
    first = data.pairs[0]
    # response_0 is the first objective's chosen text; "simple" prefers the other response.
    assert first.responses == (" it exceeded them.", " the showers were cold.") and first.preferred == (0, 1)
    assert [p.preferred for p in data.pairs] == [(0, 1), (0, 0), (0, 0)]
    assert data.pairs[1].prompt == data.pairs[2].prompt  # repeated prompts are kept


def test_plain_chosen_rejected_is_one_objective(tmp_path):
    path = tmp_path / "dpo.jsonl"
    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"}, {"prompt": "q", "chosen": "yes", "rejected": "no"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_preference_pairs(path)
    assert data.objectives == ("preference",)
    assert data.pairs[1] == PreferencePair("q", ("yes", "no"), (0,))


def test_parquet_and_json_array_match_the_jsonl(tmp_path):
    rows = [json.loads(line) for line in PKU.read_text().splitlines() if line.strip()]
    pd.DataFrame(rows).to_parquet(tmp_path / "pku.parquet")
    (tmp_path / "pku.json").write_text(json.dumps(rows))
    expected = load_preference_pairs(PKU).pairs
    assert load_preference_pairs(tmp_path / "pku.parquet").pairs == expected
    assert load_preference_pairs(tmp_path / "pku.json").pairs == expected


def test_datasets_data_frames_and_hf_specs_match_the_jsonl(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in PKU.read_text().splitlines() if line.strip()]
    expected = load_preference_pairs(PKU)
    from_frame = preferences_from_object(pd.DataFrame(rows))
    assert from_frame.pairs == expected.pairs and from_frame.source == "preferences"
    assert preferences_from_object(datasets.Dataset.from_list(rows), ["safer"]).pairs == load_preference_pairs(
        PKU, ["safer"]
    ).pairs
    renamed = [{("question" if k == "prompt" else k): v for k, v in row.items()} for row in rows]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(renamed)}).save_to_disk(str(tmp_path / "pku"))
    loaded = load_preference_pairs(f"hf:{tmp_path / 'pku'}:test:question", offline=True)
    assert loaded.pairs == expected.pairs and loaded.source == f"hf:{tmp_path / 'pku'}:test"
    with pytest.raises(ValueError, match=r"row 0 \(0-based\): missing field 'prompt'"):
        load_preference_pairs(f"hf:{tmp_path / 'pku'}:test")
    with pytest.raises(TypeError, match=r"expected a datasets\.Dataset"):
        preferences_from_object("pairs.jsonl")


def test_records_are_frozen():
    data = load_preference_pairs(PKU)
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.pairs[0].prompt = "x"
    assert isinstance(data, PreferenceData) and isinstance(data.pairs, tuple)


def test_unknown_objective_in_prefer_1_names_the_labelled_ones():
    with pytest.raises(ValueError, match="no labels for objective 'helpful'; it labels better, safer"):
        load_preference_pairs(PKU).prefer_1("helpful")


# ---------------------------------------------------------------------------------------------------------------
# malformed files: each error names the file, the row and the field
# ---------------------------------------------------------------------------------------------------------------

GOOD = {"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 0, "safer_response_id": 1}


def _write(tmp_path: Path, rows: list, name: str = "pairs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("second_row", "match"),
    [
        ({k: v for k, v in GOOD.items() if k != "prompt"}, "line 2: missing field 'prompt'"),
        ({**GOOD, "prompt": 3}, "line 2: field 'prompt' is 3 \\(int\\), expected a string"),
        ({**GOOD, "prompt": "  "}, "line 2: field 'prompt' is empty"),
        ({k: v for k, v in GOOD.items() if k != "response_1"}, "line 2: missing field 'response_1'"),
        ({**GOOD, "response_0": None}, "line 2: field 'response_0' is None"),
        ({**GOOD, "better_response_id": 2}, "line 2: field 'better_response_id' is 2 .*number 0 or 1"),
        ({**GOOD, "better_response_id": "1"}, "line 2: field 'better_response_id' is '1' \\(str\\)"),
        ({**GOOD, "better_response_id": True}, "line 2: field 'better_response_id' is True \\(bool\\)"),
        ({**GOOD, "better_response_id": 0.5}, "line 2: field 'better_response_id' is 0.5 \\(float\\)"),
        ({**GOOD, "better_response_id": None}, "line 2: field 'better_response_id' is None"),
        ({k: v for k, v in GOOD.items() if k != "safer_response_id"}, "line 2: missing label field 'safer_"),
        ({**GOOD, "response_1": "a"}, "line 2: the two responses are identical"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ("{not json", "line 2 is not valid JSON"),
    ],
)
def test_malformed_pku_rows(tmp_path, second_row, match):
    path = _write(tmp_path, [GOOD, second_row])
    with pytest.raises(ValueError, match=match) as err:
        load_preference_pairs(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("first_row", "match"),
    [
        ({"prompt": "p", "text": "a"}, "no preference fields found .*expected schemas: pku"),
        ({"prompt": "p", "response_0": "a", "response_1": "b"}, "no <objective>_response_id label field"),
        ({**GOOD, "response_2": "c"}, "has response_2; a pair has exactly response_0 and response_1"),
    ],
)
def test_unknown_schemas(tmp_path, first_row, match):
    with pytest.raises(ValueError, match=match):
        load_preference_pairs(_write(tmp_path, [first_row]))


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "p", "a_chosen": "x", "a_rejected": "y", "b_chosen": "x", "b_rejected": "z"},
         "line 1: 'b_chosen'/'b_rejected' are not the two responses of 'a_chosen'/'a_rejected'"),
        ({"prompt": "p", "a_chosen": "x", "a_rejected": "x"}, "line 1: the two responses are identical"),
        ({"prompt": "p", "a_chosen": "x"}, "line 1: missing field 'a_rejected'"),
        ({"prompt": "p", "chosen": "x", "rejected": 5}, "line 1: field 'rejected' is 5"),
    ],
)  # fmt: skip
def test_malformed_chosen_rejected_rows(tmp_path, row, match):
    with pytest.raises(ValueError, match=match):
        load_preference_pairs(_write(tmp_path, [row]))


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="preference file not found"):
        load_preference_pairs(tmp_path / "missing.jsonl")
    (tmp_path / "pairs.csv").write_text("prompt,chosen\n")
    with pytest.raises(ValueError, match=r"unsupported extension '\.csv'"):
        load_preference_pairs(tmp_path / "pairs.csv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no records"):
        load_preference_pairs(tmp_path / "empty.jsonl")


@pytest.mark.parametrize("objectives", [["helpful"], [], ["better", "better"]])
def test_bad_objective_selection(objectives):
    with pytest.raises(ValueError, match="must be distinct and labelled by the file; it labels better, safer"):
        load_preference_pairs(PKU, objectives=objectives)


def test_parquet_float_labels_read_and_a_missing_label_names_the_row(tmp_path):
    # A missing integer in Parquet turns the column into floats (1.0, 0.0, NaN): the numbers are read, the NaN
    # is refused with its 0-based row.
    rows = [{**GOOD, "better_response_id": 1.0}, GOOD]
    pd.DataFrame(rows).to_parquet(tmp_path / "floats.parquet")
    assert [p.preferred for p in load_preference_pairs(tmp_path / "floats.parquet").pairs] == [(1, 1), (0, 1)]
    pd.DataFrame([GOOD, {**GOOD, "better_response_id": None}]).to_parquet(tmp_path / "gap.parquet")
    with pytest.raises(ValueError, match=r"row 1 \(0-based\): label field 'better_response_id' is missing \(NaN\)"):
        load_preference_pairs(tmp_path / "gap.parquet")
