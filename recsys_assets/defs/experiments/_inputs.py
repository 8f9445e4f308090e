"""Inputs the experiment reports share: every model's evaluation lists and the splits' columns."""

from dagster import AllPartitionMapping, AssetIn

# Every model partition of eval_recommendations in one frame (the IO manager reads
# `WHERE model IN (...)`), so a newly registered model joins every report without an edit.
ALL_MODEL_LISTS = AssetIn("eval_recommendations", partition_mapping=AllPartitionMapping())
# The reports need who did what when, in which split: 6 of the 8 columns of `splits`.
SPLITS_COLUMNS = ["user_id", "item_id", "event", "timestamp", "transaction_id", "split"]
SPLITS = AssetIn("splits", metadata={"columns": SPLITS_COLUMNS})
GROUP = "experiments"
