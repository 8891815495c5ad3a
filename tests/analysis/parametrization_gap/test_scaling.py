"""scaling_table on synthetic summaries whose answers are known by construction of the table."""

import numpy as np
import pandas as pd
import pytest

from analysis.parametrization_gap.scaling import BY_CONSTRUCTION, check_counts, scaling_table

NU = np.array([1e-5, 3e-3, 1e-2, 3e-2, 0.1, 0.3])
CLASSES = ["tabular", "lowrank", "lowrank", "transformer", "transformer", "transformer"]
FAILS = "fails: Assumption 4 (Mnu-tightened problem infeasible by 0.03)"


def _summary() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "policy_class": CLASSES,
            "nu": NU,
            # Exactly 2 nu^0.5 on every class, always within a bound 10x larger: slope 0.5, no violation.
            "sqrt_gap_measured": 2.0 * NU**0.5,
            "sqrt_gap_bound": 20.0 * NU**0.5,
            "sqrt_gap_hypothesis": ["holds"] * 6,
            # Quadratic, with a violation on row 2 and a failed hypothesis (NaN bound) on the last row.
            "quad_measured": NU**2,
            "quad_bound": [1.0, 1.0, 1e-6, 1.0, 1.0, np.nan],
            "quad_hypothesis": ["holds"] * 5 + [FAILS],
            # Two-sided: row 1 below its lower side (a violation), row 3 negative but inside.
            "two_measured": [0.0, -0.5, 0.1, -0.05, 0.2, 0.3],
            "two_bound_lower": [-1.0, -0.1, -1.0, -1.0, -1.0, -1.0],
            "two_bound": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            "two_hypothesis": ["holds"] * 6,
            # Measured with no bound at all.
            "free_measured": NU,
        }
    )


@pytest.fixture(scope="module")
def table():
    return scaling_table(_summary()).set_index("quantity")


def test_counts_a_known_violation_and_a_nan_bound_as_not_applicable(table):
    row = table.loc["quad"]
    assert row["checked"] == 5 and row["violations"] == 1 and row["not_applicable"] == 1
    assert row["not_applicable_reasons"] == FAILS
    assert row["checked"] + row["not_applicable"] == len(NU)


def test_nan_bound_is_never_a_pass():
    summary = _summary()
    summary["quad_bound"] = np.nan
    summary["quad_hypothesis"] = FAILS
    row = scaling_table(summary).set_index("quantity").loc["quad"]
    assert row["checked"] == 0 and row["violations"] == 0 and row["not_applicable"] == len(NU)
    assert np.isnan(row["median_looseness"])


def test_two_sided_bounds_check_the_lower_side(table):
    row = table.loc["two"]
    assert row["checked"] == 6 and row["violations"] == 1
    # Looseness of the negative in-bound row uses the lower side: 1 / 0.05 = 20 (row 1 violates: 0.1/0.5).
    ratios = sorted([1 / 0.1 * 1.0, 0.1 / 0.5, 1.0 / 0.05, 1 / 0.2, 1 / 0.3])
    assert row["median_looseness"] == pytest.approx(np.median(ratios))


def test_known_slope_and_its_bootstrap_interval(table):
    row = table.loc["sqrt_gap"]
    assert row["slope"] == pytest.approx(0.5, abs=1e-12)
    assert row["slope_parametrized"] == pytest.approx(0.5, abs=1e-12)
    # Every resample lies on the same line, so the interval collapses onto the slope.
    for end in ("slope_ci_low", "slope_ci_high", "slope_parametrized_ci_low", "slope_parametrized_ci_high"):
        assert row[end] == pytest.approx(0.5, abs=1e-9)
    assert row["checked"] == 6 and row["violations"] == 0 and row["median_looseness"] == pytest.approx(10.0)
    assert row["n_points"] == 6


def test_noisy_slope_interval_covers_the_true_slope():
    rng = np.random.default_rng(3)
    nu = np.geomspace(1e-3, 0.5, 12)
    summary = pd.DataFrame(
        {"policy_class": ["lowrank"] * 12, "nu": nu, "g_measured": nu * np.exp(rng.normal(0, 0.3, 12))}
    )
    row = scaling_table(summary).set_index("quantity").loc["g"]
    ols = np.polyfit(np.log(nu), np.log(summary["g_measured"]), 1)[0]
    assert row["slope"] == pytest.approx(ols)
    assert row["slope_ci_low"] < 1.0 < row["slope_ci_high"]
    assert row["slope_ci_high"] - row["slope_ci_low"] < 0.5


def test_quantity_without_bound_is_not_applicable_not_passed(table):
    row = table.loc["free"]
    assert row["checked"] == 0 and row["not_applicable"] == len(NU)
    assert row["not_applicable_reasons"] == "no bound column"


def test_by_construction_marks():
    summary = _summary().assign(dual_function_gap_measured=NU**2, one_u_opt_measured=NU)
    table = scaling_table(summary).set_index("quantity")
    assert table.loc["dual_function_gap", "by_construction"] == BY_CONSTRUCTION["dual_function_gap"]
    assert table.loc["one_u_opt", "by_construction"] != ""
    assert table.loc["sqrt_gap", "by_construction"] == ""


def test_missing_nu_column_is_named():
    with pytest.raises(ValueError, match="'nu'"):
        scaling_table(pd.DataFrame({"policy_class": ["tabular"], "x_measured": [1.0]}))


def test_check_counts_tallies_checked_violated_and_failed_hypotheses():
    summary = _summary()
    summary.loc[5, "two_bound"] = np.nan
    summary.loc[5, "two_bound_lower"] = np.nan
    summary.loc[5, "two_hypothesis"] = "fails: Assumption 4 (x, by 0.1); eq. (31) (D_p - D*_p = 0.2 vs 0.1)"
    # Three bounded quantities (free_measured has no hypothesis column) over six classes: 18 pairs.
    assert check_counts(summary) == (
        "16 of 18 (class, bound) pairs checked, 2 violated; 2 not applicable "
        "(failed hypotheses, a pair can fail several: Assumption 4: 2, eq. (31): 1)"
    )
