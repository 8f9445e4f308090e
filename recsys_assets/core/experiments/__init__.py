"""Offline experiments over stored recommendation lists: statistics, outcomes, CTR and money.

- ``assignment``: users to arms by a stable seeded hash;
- ``stats``: Welch and paired t-tests, sample-ratio mismatch, Holm / Benjamini–Hochberg,
  minimum detectable effect, CUPED;
- ``bootstrap``: vectorised (paired) bootstrap of means over users;
- ``outcomes``: per-user hit@K, NDCG@K, click, add-to-cart, purchase per model;
- ``ab_report``, ``ctr``, ``revenue``: the report tables; ``plots``: their figures.
- ``ablation``: variants of the models trained and scored as the models are (the ablation
  report's spec, runner and delta plot).

Pure code: numpy, scipy, polars and matplotlib only (no Dagster).
"""
