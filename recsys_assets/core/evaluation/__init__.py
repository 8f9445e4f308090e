"""Offline evaluation: the temporal holdout, ranking metrics, the next-item session protocol."""
