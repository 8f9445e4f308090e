"""Experiments over the evaluated models: offline A/B tests, CTR, financial impact, ablation."""
