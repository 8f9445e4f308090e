"""Run config that keeps the suite's runs of the whole graph quick (conftest, the UI test).

Every model is trained, tuned, scored and published as in ``make run``; only the torch models
train fewer epochs (their defaults were chosen on the scale-0.05 default, README "Models"), and
the Hybrid's own copies of them likewise. The tests check the wiring and that each model learns
the planted structure, not its best accuracy.
"""

from __future__ import annotations

import json

QUICK_MODEL_PARAMS = {
    "gru4rec": {"n_epochs": 2},
    "ncf": {"n_epochs": 4},
    "hybrid": {
        "source_params": {
            "als": {"iterations": 6},
            "gru4rec": {"n_epochs": 2},
            "ncf": {"n_epochs": 4},
        }
    },
}


def quick_run_config() -> dict:
    from recsys_assets.pipeline import model_params_run_config

    return model_params_run_config(json.dumps(QUICK_MODEL_PARAMS))
