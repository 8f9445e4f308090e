"""Inputs the experiment reports share: every model's evaluation lists and the splits' columns."""

from dagster import AllPartitionMapping, AssetIn

from recsys_assets.io_managers import MAX_RANK

# The reports look at the top ``k`` of each list (10 by default); they read the top
# ``REPORT_MAX_RANK`` of the 100-deep evaluation lists, the columns they use, nothing more.
REPORT_MAX_RANK = 20
# Every model partition of eval_recommendations in one frame (the IO manager reads
# `WHERE model IN (...)`), so a newly registered model joins every report without an edit.
ALL_MODEL_LISTS = AssetIn(
    "eval_recommendations",
    partition_mapping=AllPartitionMapping(),
    metadata={"columns": ["model", "user_id", "rank", "item_id"], MAX_RANK: REPORT_MAX_RANK},
)
# The reports need who did what when, in which split: 6 of the 8 columns of `splits`.
SPLITS_COLUMNS = ["user_id", "item_id", "event", "timestamp", "transaction_id", "split"]
SPLITS = AssetIn("splits", metadata={"columns": SPLITS_COLUMNS})
GROUP = "experiments"


def check_list_positions(k: int) -> None:
    """A report's ``k`` (list positions shown) within the ranks the reports read."""
    if not 1 <= k <= REPORT_MAX_RANK:
        raise ValueError(
            f"config k={k}: the experiment reports compare list positions 1 to "
            f"{REPORT_MAX_RANK} (the ranks they read of each model's evaluation lists)"
        )
