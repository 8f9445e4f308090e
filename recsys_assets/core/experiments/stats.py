"""Significance tests for A/B comparisons of per-user outcomes (numpy/scipy, vectorised).

Conventions: ``control`` is the current model (the champion), ``treatment`` the challenger;
``diff = mean_treatment - mean_control`` and ``lift = diff / mean_control`` (NaN when the
control mean is 0). Tests are two-sided. A statistic that is undefined (an arm with fewer than
two users, zero variance in both arms) is NaN rather than an error, so one empty metric does
not stop a report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CORRECTIONS = ("holm", "bh")


@dataclass(frozen=True)
class TestResult:
    """Means, difference, relative lift and a two-sided t-test."""

    n_control: int
    n_treatment: int
    mean_control: float
    mean_treatment: float
    diff: float
    lift: float
    std_error: float
    t: float
    df: float
    p_value: float


def _vector(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} holds NaN at index {int(np.flatnonzero(np.isnan(array))[0])}")
    return array


def relative_lift(mean_control: float, mean_treatment: float) -> float:
    return (mean_treatment - mean_control) / mean_control if mean_control != 0 else float("nan")


def welch_test(control, treatment) -> TestResult:
    """Welch's unequal-variance t-test of two independent arms (``scipy.stats.ttest_ind``)."""
    a, b = _vector(control, "control"), _vector(treatment, "treatment")
    ma = float(a.mean()) if a.size else float("nan")
    mb = float(b.mean()) if b.size else float("nan")
    if a.size < 2 or b.size < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        # (no variation in either arm: the t statistic is 0/0; scipy would warn and say NaN)
        se = t = df = p = float("nan")
    else:
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = float(np.sqrt(va + vb))
        with np.errstate(invalid="ignore", divide="ignore"):
            df = float((va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1)))
        result = sps.ttest_ind(b, a, equal_var=False)
        t, p = float(result.statistic), float(result.pvalue)
    return TestResult(a.size, b.size, ma, mb, mb - ma, relative_lift(ma, mb), se, t, df, p)


def paired_test(control, treatment) -> TestResult:
    """Paired t-test on the same users (``scipy.stats.ttest_rel``): both models scored on all."""
    a, b = _vector(control, "control"), _vector(treatment, "treatment")
    if a.shape != b.shape:
        raise ValueError(
            f"paired test needs one value per user in both arms, got {a.size} and {b.size}"
        )
    ma = float(a.mean()) if a.size else float("nan")
    mb = float(b.mean()) if b.size else float("nan")
    if a.size < 2 or np.ptp(b - a) == 0:
        se = t = p = float("nan")
    else:
        se = float((b - a).std(ddof=1) / np.sqrt(a.size))
        result = sps.ttest_rel(b, a)
        t, p = float(result.statistic), float(result.pvalue)
    return TestResult(a.size, b.size, ma, mb, mb - ma, relative_lift(ma, mb), se, t, a.size - 1, p)


@dataclass(frozen=True)
class SRMResult:
    chi2: float
    p_value: float
    mismatch: bool  # p below the SRM threshold: the split is not what was intended


def sample_ratio_mismatch(counts, expected_shares, threshold: float = 0.001) -> SRMResult:
    """Chi-square goodness of fit of the arm sizes to the intended shares.

    A mismatch means the assignment or the logging is broken, so no comparison of those arms
    can be trusted; the usual threshold is strict (0.001) because it guards the whole test.
    """
    observed = np.asarray(counts, dtype=np.float64)
    shares = np.asarray(expected_shares, dtype=np.float64)
    if observed.shape != shares.shape or observed.ndim != 1 or observed.size < 2:
        raise ValueError(
            f"counts and expected_shares must be 1-D of the same length >= 2, got "
            f"{observed.shape} and {shares.shape}"
        )
    if (shares <= 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"expected_shares must be positive and sum to 1, got {shares.tolist()}")
    total = observed.sum()
    if total == 0:
        return SRMResult(float("nan"), float("nan"), False)
    chi2, p = sps.chisquare(observed, total * shares)
    return SRMResult(float(chi2), float(p), bool(p < threshold))


def adjust_pvalues(p_values, method: str = "holm") -> np.ndarray:
    """Family-wise (Holm step-down) or false-discovery-rate (Benjamini–Hochberg) adjusted p.

    NaN p-values (undefined tests) stay NaN and do not count in the family size.
    """
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = valid.size
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    ranked = p[order]
    if method == "holm":
        # p_(i) * (m - i + 1), made monotone non-decreasing from the smallest p up
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    else:
        # p_(i) * m / i, made monotone non-increasing from the largest p down
        scaled = ranked * m / np.arange(1, m + 1)
        adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out[order] = np.minimum(adjusted, 1.0)
    return out


def minimum_detectable_effect(std_error: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided level-``alpha`` test detects with ``power``.

    ``MDE = (z_{1-alpha/2} + z_{power}) * SE``, SE being the standard error of the difference
    (two arms: ``sqrt(s_c²/n_c + s_t²/n_t)``; paired: ``s_diff / sqrt(n)``). A difference not
    significant while smaller than the MDE says the test could not have seen it, not that there
    is none.
    """
    _check_alpha_power(alpha, power)
    return float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)) * std_error)


def _check_alpha_power(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")


def cuped_theta(outcome, covariate) -> float:
    """``cov(Y, X) / var(X)``: the regression slope that CUPED removes (0 when X is constant)."""
    y, x = _vector(outcome, "outcome"), _vector(covariate, "covariate")
    if y.shape != x.shape:
        raise ValueError(f"outcome and covariate differ in length ({y.size} vs {x.size})")
    if y.size < 2:
        return 0.0
    var_x = x.var(ddof=1)
    if var_x == 0:
        return 0.0
    return float(np.cov(y, x, ddof=1)[0, 1] / var_x)


def cuped_adjust(outcome, covariate, theta: float | None = None, center: float | None = None):
    """``Y - theta (X - mean X)``: same mean as Y, variance lower by the share X explains.

    The covariate must be measured before the experiment (here: activity in train+valid), so
    the treatment cannot move it and the adjusted difference stays unbiased.
    """
    y, x = _vector(outcome, "outcome"), _vector(covariate, "covariate")
    theta = cuped_theta(y, x) if theta is None else theta
    center = float(x.mean()) if center is None else center
    return y - theta * (x - center)


@dataclass(frozen=True)
class CupedResult:
    test: TestResult  # Welch's test on the adjusted outcomes
    theta: float
    variance_reduction: float  # 1 - var(adjusted) / var(plain), pooled over both arms


def cuped_welch(control, control_covariate, treatment, treatment_covariate) -> CupedResult:
    """Welch's test after CUPED, with one theta and one covariate centre pooled over both arms
    (the covariate is independent of the arm, so pooling is unbiased and less noisy)."""
    y = np.concatenate([_vector(control, "control"), _vector(treatment, "treatment")])
    x = np.concatenate(
        [
            _vector(control_covariate, "control covariate"),
            _vector(treatment_covariate, "treatment covariate"),
        ]
    )
    if y.size != x.size:
        raise ValueError("every user needs a covariate value")
    theta = cuped_theta(y, x)
    adjusted = cuped_adjust(y, x, theta, float(x.mean()) if x.size else 0.0)
    n_control = np.asarray(control).size
    plain_var = y.var(ddof=1) if y.size > 1 else float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        reduction = float(1 - adjusted.var(ddof=1) / plain_var) if y.size > 1 else float("nan")
    test = welch_test(adjusted[:n_control], adjusted[n_control:])
    return CupedResult(test, theta, reduction)


@dataclass(frozen=True)
class RatioDiffResult:
    """Difference of two ratio metrics (e.g. CTR = clicks / impressions), delta-method CI."""

    n_control: int
    n_treatment: int
    ratio_control: float
    ratio_treatment: float
    diff: float
    lift: float
    std_error: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float


def ratio_delta_variance(numerators, denominators) -> tuple[float, float]:
    """Ratio ``sum(x) / sum(y)`` over randomisation units and its delta-method variance.

    CTR randomised by user is a ratio of two per-user sums, whose impressions are not
    independent (one user's impressions share that user's taste), so the naive binomial
    variance of clicks / impressions is too small. First-order Taylor expansion of
    ``mean(x) / mean(y)`` around the means (Deng et al., "Applying the Delta Method in Metric
    Analytics", 2018): ``Var(R) = (s_xx - 2 R s_xy + R² s_yy) / (n · mean(y)²)``, with the
    sample (co)variances ``s`` of the per-unit values. NaN when fewer than two units or no
    denominator.
    """
    x, y = _vector(numerators, "numerators"), _vector(denominators, "denominators")
    if x.shape != y.shape:
        raise ValueError(f"numerators and denominators differ in length ({x.size} vs {y.size})")
    if x.size < 2 or y.sum() == 0:
        ratio = float(x.sum() / y.sum()) if y.sum() else float("nan")
        return ratio, float("nan")
    mean_y = y.mean()
    ratio = float(x.sum() / y.sum())
    cov = np.cov(x, y, ddof=1)
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / (x.size * mean_y**2)
    return ratio, float(max(var, 0.0))


def ratio_diff_delta(
    control_num, control_den, treatment_num, treatment_den, level: float = 0.95
) -> RatioDiffResult:
    """Treatment minus control of a ratio metric with a normal CI from the delta method.

    The arms are independent (users are randomised), so the variances add.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rc, vc = ratio_delta_variance(control_num, control_den)
    rt, vt = ratio_delta_variance(treatment_num, treatment_den)
    diff = rt - rc
    se = float(np.sqrt(vc + vt))
    if not np.isfinite(se) or se == 0:
        z = p = low = high = float("nan")
    else:
        half = float(sps.norm.ppf(0.5 + level / 2)) * se
        low, high = diff - half, diff + half
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    n_c, n_t = np.asarray(control_num).size, np.asarray(treatment_num).size
    return RatioDiffResult(n_c, n_t, rc, rt, diff, relative_lift(rc, rt), se, low, high, z, p)
