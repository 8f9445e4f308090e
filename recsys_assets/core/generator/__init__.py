"""The embedded default data set: a seeded synthetic RetailRocket with planted structure.

``dataset`` assembles the four files from ``catalog`` (categories, items, prices), ``sessions``
(visitors, sessions, viewed items), ``funnel`` (add-to-carts, transactions, bundles) and
``properties`` (weekly property snapshots).
"""

from recsys_assets.core.generator.dataset import (
    REAL_COUNTS,
    TRUTH_FILE,
    GeneratedDataset,
    GeneratorConfig,
    PlantedStructure,
    ensure_dataset,
    generate_dataset,
)

__all__ = [
    "REAL_COUNTS",
    "TRUTH_FILE",
    "GeneratedDataset",
    "GeneratorConfig",
    "PlantedStructure",
    "ensure_dataset",
    "generate_dataset",
]
