"""Shop analytics on the cleaned click-stream: funnel, activity heat-map, RFM, basket rules."""

from recsys_assets.core.analytics.funnel import conversion_funnel
from recsys_assets.core.analytics.heatmap import activity_heatmap, heatmap_matrix
from recsys_assets.core.analytics.rfm import rfm_segment_summary, rfm_segments
from recsys_assets.core.analytics.rules import (
    association_rules,
    session_baskets,
    transaction_baskets,
)

__all__ = [
    "activity_heatmap",
    "association_rules",
    "conversion_funnel",
    "heatmap_matrix",
    "rfm_segment_summary",
    "rfm_segments",
    "session_baskets",
    "transaction_baskets",
]
