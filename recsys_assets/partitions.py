"""Partition definitions: days of raw events, and one static partition per model."""

from __future__ import annotations

from dagster import DailyPartitionsDefinition, StaticPartitionsDefinition

from recsys_assets.core.models.registry import MODEL_REGISTRY
from recsys_assets.settings import Settings

_settings = Settings.from_env()

daily_partitions = DailyPartitionsDefinition(
    start_date=_settings.partition_start, end_date=_settings.partition_end, timezone="UTC"
)
model_partitions = StaticPartitionsDefinition(list(MODEL_REGISTRY))
