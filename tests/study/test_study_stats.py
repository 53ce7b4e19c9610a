"""The study's statistics: Student's t quantiles and the paired interval, against known values."""

from __future__ import annotations

import math

import pytest

from ades_core.study.stats import StatisticsError, mean_std, paired_difference, t_cdf, t_quantile

# t_{0.975, df} from the standard tables (three decimals).
T_TABLE_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 20: 2.086, 30: 2.042}


@pytest.mark.parametrize(("df", "expected"), sorted(T_TABLE_975.items()))
def test_t_quantile_matches_the_printed_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_matches_the_closed_forms_of_one_and_two_degrees_of_freedom():
    for p in (0.6, 0.9, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_t_quantile_is_symmetric_and_inverts_the_cdf():
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-9)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4), rel=1e-12)
    for df in (1, 2.5, 7, 50):
        assert t_cdf(t_quantile(0.9, df), df) == pytest.approx(0.9, abs=1e-10)


def test_t_quantile_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        for p in (0.9, 0.95, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-8)


def test_t_quantile_refuses_p_outside_the_open_unit_interval():
    with pytest.raises(StatisticsError, match=r"p in \(0, 1\)"):
        t_quantile(1.0, 3)


def test_mean_std_uses_n_minus_one_and_has_no_spread_for_one_value():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert mean_std([0.4]) == (0.4, None)


def test_paired_difference_matches_a_hand_computation():
    # Per-seed accuracies; seed 3 has no reference run, so 3 seeds are paired.
    arm = {0: 0.50, 1: 0.54, 2: 0.49, 3: 0.60}
    reference = {0: 0.47, 1: 0.50, 2: 0.48}
    result = paired_difference(arm, reference)
    # Differences 0.03, 0.04, 0.01: mean 0.08/3, sd = 0.01 * sqrt(7/3) (deviations 1/3, 4/3, -5/3
    # of 0.01, squares summing to 14/3, over n - 1 = 2); half width t_{0.975,2} * sd / sqrt(3).
    assert result.seeds == (0, 1, 2)
    assert result.n == 3
    assert result.differences == pytest.approx((0.03, 0.04, 0.01))
    assert result.mean == pytest.approx(0.08 / 3)
    assert result.std == pytest.approx(0.01 * math.sqrt(7 / 3))
    assert result.t == pytest.approx(4.303, abs=5e-4)
    half = 4.302653 * 0.01 * math.sqrt(7 / 3) / math.sqrt(3)
    assert result.low == pytest.approx(0.08 / 3 - half, abs=1e-6)
    assert result.high == pytest.approx(0.08 / 3 + half, abs=1e-6)
    assert result.low == pytest.approx(-0.011279, abs=1e-6)
    assert result.high == pytest.approx(0.064613, abs=1e-6)


def test_paired_difference_needs_two_common_seeds():
    with pytest.raises(StatisticsError, match="at least 2 common seeds, got 1"):
        paired_difference({0: 0.5, 1: 0.6}, {1: 0.4, 2: 0.3})
