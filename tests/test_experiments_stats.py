"""Statistics of the offline A/B report: known answers from hand formulas, planted effects,
A/A false-positive rate, SRM, CUPED, multiple-testing corrections, hashing and bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from recsys_assets.core.experiments.assignment import assign_arms, splitmix64, unit_interval
from recsys_assets.core.experiments.bootstrap import bootstrap_means, percentile_interval
from recsys_assets.core.experiments.stats import (
    adjust_pvalues,
    cuped_adjust,
    cuped_theta,
    cuped_welch,
    minimum_detectable_effect,
    paired_test,
    sample_ratio_mismatch,
    welch_test,
)

A = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
B = np.array([2.0, 4.5, 3.5, 6.0, 7.5, 8.0, 9.0])


# --- Welch / paired: hand formulas --------------------------------------------------------------


def test_welch_matches_the_hand_formula():
    va, vb = A.var(ddof=1) / A.size, B.var(ddof=1) / B.size
    t = (B.mean() - A.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (A.size - 1) + vb**2 / (B.size - 1))
    p = 2 * sps.t.sf(abs(t), df)

    result = welch_test(A, B)

    assert result.mean_control == pytest.approx(3.5)
    assert result.mean_treatment == pytest.approx(B.mean())
    assert result.diff == pytest.approx(B.mean() - 3.5)
    assert result.lift == pytest.approx(B.mean() / 3.5 - 1)
    assert result.t == pytest.approx(t)
    assert result.df == pytest.approx(df)
    assert result.p_value == pytest.approx(p)
    assert result.std_error == pytest.approx(math.sqrt(va + vb))
    assert (result.n_control, result.n_treatment) == (6, 7)


def test_paired_matches_the_hand_formula():
    control = np.array([0.2, 0.4, 0.1, 0.0, 0.9, 0.3, 0.5])
    treatment = B / 10
    d = treatment - control
    t = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    p = 2 * sps.t.sf(abs(t), d.size - 1)

    result = paired_test(control, treatment)

    assert result.t == pytest.approx(t)
    assert result.p_value == pytest.approx(p)
    assert result.diff == pytest.approx(d.mean())
    assert result.lift == pytest.approx(treatment.mean() / control.mean() - 1)
    assert result.df == d.size - 1


def test_paired_refuses_vectors_of_different_users():
    with pytest.raises(ValueError, match="one value per user"):
        paired_test(A, B)


def test_undefined_tests_are_nan_not_errors():
    zeros = np.zeros(10)
    assert math.isnan(welch_test(zeros, zeros).p_value)
    assert math.isnan(welch_test([1.0], [1.0, 2.0]).p_value)
    assert math.isnan(welch_test(zeros, np.ones(10)).lift)  # control mean 0: no relative lift


def test_nan_outcomes_are_refused_with_their_index():
    with pytest.raises(ValueError, match="treatment holds NaN at index 2"):
        welch_test(A, [1.0, 2.0, np.nan])


# --- planted effects and the A/A false-positive rate --------------------------------------------


def test_a_planted_lift_is_detected_by_every_test():
    rng = np.random.default_rng(1)
    n = 6000
    base = rng.random(n) < 0.10
    # treatment keeps every control hit and adds 3 points of new ones: a real +30% lift
    treatment = (base | (rng.random(n) < 0.033)).astype(float)
    control = base.astype(float)
    arms = assign_arms(np.arange(n), seed=3)
    covariate = rng.normal(size=n)

    welch = welch_test(control[~arms], treatment[arms])
    paired = paired_test(control, treatment)
    cuped = cuped_welch(control[~arms], covariate[~arms], treatment[arms], covariate[arms])

    assert welch.p_value < 1e-3 and welch.lift > 0.15
    assert paired.p_value < 1e-20 and paired.diff > 0
    assert cuped.test.p_value < 1e-3


def test_a_a_false_positive_rate_stays_within_alphas_binomial_interval():
    """One outcome vector, 200 hash seeds: each split is an A/A test; at alpha = 0.05 the
    number of rejections must be a plausible Binomial(200, 0.05) draw (99% interval)."""
    rng = np.random.default_rng(0)
    n, alpha, seeds = 4000, 0.05, 200
    outcome = (rng.random(n) < 0.12).astype(float)
    user_ids = rng.choice(10**9, size=n, replace=False)
    rejections = sum(
        welch_test(outcome[~arms], outcome[arms]).p_value < alpha
        for arms in (assign_arms(user_ids, seed=s) for s in range(seeds))
    )
    low, high = sps.binom.interval(0.99, seeds, alpha)
    assert low <= rejections <= high, rejections


def test_the_mde_is_the_effect_detected_with_the_chosen_power():
    alpha, power, n = 0.05, 0.8, 500
    # hand formula: (z_{0.975} + z_{0.8}) * SE
    assert minimum_detectable_effect(1.0, alpha, power) == pytest.approx(
        1.959963984540054 + 0.8416212335729143
    )
    se = math.sqrt(2 / n)  # two arms of n, unit variance
    mde = minimum_detectable_effect(se, alpha, power)
    rng = np.random.default_rng(5)
    trials = 300
    detected = sum(
        welch_test(rng.normal(0, 1, n), rng.normal(mde, 1, n)).p_value < alpha
        for _ in range(trials)
    )
    low, high = sps.binom.interval(0.99, trials, power)
    assert low <= detected <= high, detected


@pytest.mark.parametrize(("alpha", "power"), [(0, 0.8), (0.05, 1.0)])
def test_mde_refuses_impossible_settings(alpha, power):
    with pytest.raises(ValueError, match="must be in"):
        minimum_detectable_effect(1.0, alpha, power)


# --- sample-ratio mismatch ---------------------------------------------------------------------


def test_srm_matches_the_hand_chi_square_and_fires_on_a_skewed_split():
    result = sample_ratio_mismatch([5000, 4500], [0.5, 0.5])
    chi2 = 2 * 250**2 / 4750
    assert result.chi2 == pytest.approx(chi2)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))  # chi2 sf, 1 df
    assert result.mismatch


def test_srm_stays_quiet_on_the_hash_split():
    user_ids = np.arange(1, 40_001) * 7919
    for seed in range(5):
        treated = assign_arms(user_ids, seed=seed, treatment_share=0.3)
        counts = [int((~treated).sum()), int(treated.sum())]
        assert not sample_ratio_mismatch(counts, [0.7, 0.3]).mismatch, (seed, counts)


def test_srm_refuses_shares_that_do_not_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        sample_ratio_mismatch([10, 10], [0.5, 0.6])


# --- Holm / Benjamini–Hochberg ----------------------------------------------------------------


def test_holm_against_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.03, 0.06, 0.06, 0.02])


def test_bh_against_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted x4/1, x4/2, x4/3, x4/4 = 0.02, 0.02, 0.04, 0.04 -> running min from the top
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.02, 0.04, 0.04, 0.02])


def test_corrections_cap_at_one_and_skip_nan():
    adjusted = adjust_pvalues([0.6, np.nan, 0.5], "holm")
    assert math.isnan(adjusted[1])
    np.testing.assert_allclose(adjusted[[0, 2]], [1.0, 1.0])  # family of 2, not 3
    np.testing.assert_allclose(adjust_pvalues([0.02, np.nan, 0.04], "bh")[[0, 2]], [0.04, 0.04])
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues([0.1], "bonferroni")


# --- CUPED ------------------------------------------------------------------------------------


def test_cuped_theta_and_adjustment_known_answer():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 4.0, 5.0, 9.0])
    theta = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert cuped_theta(y, x) == pytest.approx(theta)
    adjusted = cuped_adjust(y, x)
    np.testing.assert_allclose(adjusted, y - theta * (x - 2.5))
    assert adjusted.mean() == pytest.approx(y.mean())


def test_cuped_reduces_variance_on_correlated_data_and_keeps_the_effect():
    rng = np.random.default_rng(2)
    n = 4000
    x = rng.normal(size=2 * n)  # pre-period activity
    y = 0.8 * x + rng.normal(scale=0.6, size=2 * n)  # corr^2 = 0.64
    y[n:] += 0.05  # planted difference
    plain = welch_test(y[:n], y[n:])
    cuped = cuped_welch(y[:n], x[:n], y[n:], x[n:])
    assert cuped.variance_reduction == pytest.approx(0.64, abs=0.03)
    assert cuped.test.std_error < 0.7 * plain.std_error
    assert cuped.test.diff == pytest.approx(0.05, abs=0.02)


def test_cuped_with_a_constant_covariate_is_the_plain_test():
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    result = cuped_welch(y[:3], np.ones(3), y[3:], np.ones(3))
    assert result.theta == 0.0
    assert result.test.p_value == pytest.approx(welch_test(y[:3], y[3:]).p_value)


# --- hashing -----------------------------------------------------------------------------------


def test_splitmix64_known_values():
    # The first outputs of the reference splitmix64 generator seeded with 0 (state += golden).
    golden = 0x9E3779B97F4A7C15
    out = splitmix64(np.array([0, golden], dtype=np.uint64))
    assert [int(v) for v in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_assignment_is_stable_balanced_and_salted():
    users = np.arange(100_000, dtype=np.int64)
    arms = assign_arms(users, seed=42)
    np.testing.assert_array_equal(arms, assign_arms(users.copy(), seed=42))
    np.testing.assert_array_equal(arms[::-1], assign_arms(users[::-1], seed=42))  # per user
    assert abs(arms.mean() - 0.5) < 0.01
    other = assign_arms(users, seed=42, name="als vs popular")
    assert abs((arms == other).mean() - 0.5) < 0.01  # another experiment: independent split
    assert abs(assign_arms(users, seed=1, treatment_share=0.2).mean() - 0.2) < 0.01
    u = unit_interval(users, seed=0)
    assert u.min() >= 0 and u.max() < 1


def test_assignment_refuses_non_integer_ids_and_bad_shares():
    with pytest.raises(ValueError, match="integers"):
        assign_arms(np.array([1.5]), seed=0)
    with pytest.raises(ValueError, match="treatment_share"):
        assign_arms(np.array([1]), seed=0, treatment_share=1.0)


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_means_equal_explicit_resamples_of_the_same_indices():
    rng = np.random.default_rng(0)
    values = rng.random((50, 3))
    boot = bootstrap_means(values, n_resamples=40, seed=9)
    # the same draws, resampled the slow way
    idx = np.random.default_rng(9).integers(0, 50, size=(40, 50), dtype=np.int32)
    np.testing.assert_allclose(boot, values[idx].mean(axis=1), rtol=1e-6)  # float32 product


def test_bootstrap_chunking_does_not_change_the_result():
    values = np.random.default_rng(1).random((300, 2))
    whole = bootstrap_means(values, 64, seed=4)
    chunked = bootstrap_means(values, 64, seed=4, chunk_elements=1000)  # 3 resamples a chunk
    # the same resamples; the float32 products of differently shaped blocks may sum in another
    # order (BLAS picks the kernel by shape), so equal to float32 rounding, not bit for bit
    # (this machine's BLAS: 24 of 128 means differed by 2e-7 relative)
    np.testing.assert_allclose(whole, chunked, rtol=2e-6)
    different_seed = bootstrap_means(values, 64, seed=5)
    assert not np.allclose(whole, different_seed, rtol=1e-3)


def test_bootstrap_spread_matches_the_standard_error():
    values = (np.random.default_rng(3).random(20_000) < 0.1).astype(float)
    boot = bootstrap_means(values, 2000, seed=0)[:, 0]
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert boot.mean() == pytest.approx(values.mean(), abs=se / 5)
    assert boot.std() == pytest.approx(se, rel=0.08)
    low, high = percentile_interval(boot[:, None], 0.95)
    assert low[0] == pytest.approx(values.mean() - 1.96 * se, abs=se / 4)
    assert high[0] == pytest.approx(values.mean() + 1.96 * se, abs=se / 4)


def test_bootstrap_of_rare_binary_outcomes_is_exact():
    """Resamples that miss the only buyer give exactly 0, and 0/1 sums are exact counts."""
    values = np.zeros((5000, 2))
    values[17, 0] = 1.0
    values[::2, 1] = 1.0
    boot = bootstrap_means(values, 300, seed=2)
    idx = np.random.default_rng(2).integers(0, 5000, size=(300, 5000), dtype=np.int32)
    np.testing.assert_array_equal(boot, values[idx].sum(axis=1) / 5000)
    assert (boot[:, 0] == 0).any()
    low, _ = percentile_interval(boot, 0.95)
    assert low[0] == 0.0
