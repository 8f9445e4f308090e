"""The offline A/B report: champion against each challenger (and configured pairs), per metric.

For every comparison ``control`` (the champion, or the first model of a configured pair) vs
``treatment`` and every outcome:

- **simulated A/B** — users split into two arms by a seeded hash salted with the comparison's
  name; the control arm is scored with the control model's lists, the treatment arm with the
  treatment's: Welch's t-test (means, difference, lift, p), its MDE, the sample-ratio-mismatch
  check on the arm sizes, and CUPED on the same arms with pre-period activity as covariate;
- **paired** — both models are scored on every user offline, the stronger design: paired
  t-test, its MDE, and a paired percentile bootstrap CI of the difference and of the lift (all
  columns resampled with the same users);
- every p-value family (Welch, CUPED, paired) is adjusted across all rows of the report (Holm by
  default, Benjamini–Hochberg as an option). ``significant`` and ``verdict`` read the adjusted
  paired p-value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from recsys_assets.core.experiments.assignment import assign_arms
from recsys_assets.core.experiments.bootstrap import (
    bootstrap_means,
    percentile_interval,
    ratio_lift,
)
from recsys_assets.core.experiments.outcomes import OutcomeMatrix
from recsys_assets.core.experiments.stats import (
    CORRECTIONS,
    adjust_pvalues,
    cuped_welch,
    minimum_detectable_effect,
    paired_test,
    sample_ratio_mismatch,
    welch_test,
)

CHAMPION_VS_CHALLENGER = "champion_vs_challenger"
CONFIGURED = "configured"


@dataclass(frozen=True)
class ABSettings:
    alpha: float = 0.05
    power: float = 0.8
    correction: str = "holm"  # or "bh"
    n_bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0
    treatment_share: float = 0.5
    srm_threshold: float = 0.001

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {self.correction!r}")
        for name in ("alpha", "power", "confidence", "treatment_share", "srm_threshold"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be at least 1, got {self.n_bootstrap}")


@dataclass(frozen=True)
class Comparison:
    control: str
    treatment: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.treatment} vs {self.control}"


def parse_pair(text: str) -> tuple[str, str]:
    """``"control:treatment"`` -> ``(control, treatment)``."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(
            f"pair {text!r}: expected 'control:treatment' with two different model names"
        )
    return parts[0], parts[1]


def plan_comparisons(
    ranked_models: Sequence[str], available: Sequence[str], extra_pairs: Sequence[str] = ()
) -> list[Comparison]:
    """The champion (first of ``ranked_models`` that has outcomes) against every other
    available model, in ranking order (unranked ones last, by name), then configured pairs
    not already compared."""
    available = list(available)
    ranked = [m for m in ranked_models if m in available]
    order = ranked + sorted(m for m in available if m not in ranked)
    comparisons: list[Comparison] = []
    if order:
        champion = order[0]
        comparisons = [Comparison(champion, m, CHAMPION_VS_CHALLENGER) for m in order[1:]]
    seen = {frozenset((c.control, c.treatment)) for c in comparisons}
    for text in extra_pairs:
        control, treatment = parse_pair(text)
        unknown = [m for m in (control, treatment) if m not in available]
        if unknown:
            raise ValueError(
                f"pair {text!r}: model(s) {unknown} have no evaluation lists; "
                f"available: {sorted(available)}"
            )
        if frozenset((control, treatment)) not in seen:
            seen.add(frozenset((control, treatment)))
            comparisons.append(Comparison(control, treatment, CONFIGURED))
    return comparisons


def ab_test_table(
    matrix: OutcomeMatrix, comparisons: Sequence[Comparison], settings: ABSettings
) -> pl.DataFrame:
    """One row per (comparison, outcome); columns described in the module docstring."""
    boot = bootstrap_means(matrix.flat(), settings.n_bootstrap, settings.seed)
    x = matrix.covariate
    rows = []
    for comparison in comparisons:
        treated = assign_arms(
            matrix.user_ids, settings.seed, settings.treatment_share, name=comparison.name
        )
        n_treatment = int(treated.sum())
        srm = sample_ratio_mismatch(
            [len(treated) - n_treatment, n_treatment],
            [1 - settings.treatment_share, settings.treatment_share],
            settings.srm_threshold,
        )
        for outcome in matrix.outcomes:
            yc = matrix.column(comparison.control, outcome)
            yt = matrix.column(comparison.treatment, outcome)
            welch = welch_test(yc[~treated], yt[treated])
            cuped = cuped_welch(yc[~treated], x[~treated], yt[treated], x[treated])
            paired = paired_test(yc, yt)
            bc = boot[:, matrix.flat_index(comparison.control, outcome)]
            bt = boot[:, matrix.flat_index(comparison.treatment, outcome)]
            (diff_low, lift_low), (diff_high, lift_high) = percentile_interval(
                np.column_stack([bt - bc, ratio_lift(bc, bt)]), settings.confidence
            )
            welch_mde = minimum_detectable_effect(welch.std_error, settings.alpha, settings.power)
            paired_mde = minimum_detectable_effect(paired.std_error, settings.alpha, settings.power)
            rows.append(
                {
                    "comparison": comparison.name,
                    "kind": comparison.kind,
                    "control": comparison.control,
                    "treatment": comparison.treatment,
                    "metric": outcome,
                    "n_control": welch.n_control,
                    "n_treatment": welch.n_treatment,
                    "srm_chi2": srm.chi2,
                    "srm_p_value": srm.p_value,
                    "srm_mismatch": srm.mismatch,
                    "mean_control": welch.mean_control,
                    "mean_treatment": welch.mean_treatment,
                    "diff": welch.diff,
                    "lift": welch.lift,
                    "welch_t": welch.t,
                    "welch_df": welch.df,
                    "welch_p_value": welch.p_value,
                    "mde_abs": welch_mde,
                    "mde_rel": _relative(welch_mde, welch.mean_control),
                    "cuped_diff": cuped.test.diff,
                    "cuped_lift": _relative(cuped.test.diff, welch.mean_control),
                    "cuped_p_value": cuped.test.p_value,
                    "cuped_theta": cuped.theta,
                    "cuped_variance_reduction": cuped.variance_reduction,
                    "paired_n": paired.n_control,
                    "paired_mean_control": paired.mean_control,
                    "paired_mean_treatment": paired.mean_treatment,
                    "paired_diff": paired.diff,
                    "paired_lift": paired.lift,
                    "paired_t": paired.t,
                    "paired_p_value": paired.p_value,
                    "paired_mde_abs": paired_mde,
                    "paired_mde_rel": _relative(paired_mde, paired.mean_control),
                    "diff_ci_low": float(diff_low),
                    "diff_ci_high": float(diff_high),
                    "lift_ci_low": float(lift_low),
                    "lift_ci_high": float(lift_high),
                }
            )
    table = pl.DataFrame(rows, schema=_SCHEMA) if rows else pl.DataFrame(schema=_SCHEMA)
    for family in ("welch", "cuped", "paired"):
        adjusted = adjust_pvalues(table[f"{family}_p_value"].to_numpy(), settings.correction)
        table = table.with_columns(pl.Series(f"{family}_p_adjusted", adjusted, pl.Float64))
    significant = table["paired_p_adjusted"].fill_nan(1.0) < settings.alpha
    table = table.with_columns(
        significant=significant,
        verdict=pl.Series(_verdicts(table, significant.to_numpy()), dtype=pl.Utf8),
        alpha=pl.lit(settings.alpha),
        power=pl.lit(settings.power),
        correction=pl.lit(settings.correction),
        confidence=pl.lit(settings.confidence),
        n_bootstrap=pl.lit(settings.n_bootstrap),
        settings_json=pl.lit(json.dumps(asdict(settings))),
    )
    return table


def _relative(value: float, base: float) -> float:
    return value / base if base not in (0, 0.0) and np.isfinite(base) else float("nan")


def _verdicts(table: pl.DataFrame, significant: np.ndarray) -> list[str]:
    """A reading of each row: better / worse when significant, else whether the test could
    have seen the observed difference at all (|diff| against the paired MDE)."""
    out = []
    for row, sig in zip(table.iter_rows(named=True), significant, strict=True):
        if np.isnan(row["paired_p_value"]):
            out.append("undefined (no variation)")
        elif sig:
            better = row["paired_diff"] > 0
            out.append(f"{row['treatment']} {'better' if better else 'worse'}")
        elif abs(row["paired_diff"]) < row["paired_mde_abs"]:
            out.append("not significant: difference below the MDE (underpowered)")
        else:
            out.append("not significant after correction")
    return out


_SCHEMA = {
    "comparison": pl.Utf8,
    "kind": pl.Utf8,
    "control": pl.Utf8,
    "treatment": pl.Utf8,
    "metric": pl.Utf8,
    "n_control": pl.Int64,
    "n_treatment": pl.Int64,
    "srm_chi2": pl.Float64,
    "srm_p_value": pl.Float64,
    "srm_mismatch": pl.Boolean,
    "mean_control": pl.Float64,
    "mean_treatment": pl.Float64,
    "diff": pl.Float64,
    "lift": pl.Float64,
    "welch_t": pl.Float64,
    "welch_df": pl.Float64,
    "welch_p_value": pl.Float64,
    "mde_abs": pl.Float64,
    "mde_rel": pl.Float64,
    "cuped_diff": pl.Float64,
    "cuped_lift": pl.Float64,
    "cuped_p_value": pl.Float64,
    "cuped_theta": pl.Float64,
    "cuped_variance_reduction": pl.Float64,
    "paired_n": pl.Int64,
    "paired_mean_control": pl.Float64,
    "paired_mean_treatment": pl.Float64,
    "paired_diff": pl.Float64,
    "paired_lift": pl.Float64,
    "paired_t": pl.Float64,
    "paired_p_value": pl.Float64,
    "paired_mde_abs": pl.Float64,
    "paired_mde_rel": pl.Float64,
    "diff_ci_low": pl.Float64,
    "diff_ci_high": pl.Float64,
    "lift_ci_low": pl.Float64,
    "lift_ci_high": pl.Float64,
}
