"""Recommenders per model partition: tuning, training, lists, metrics; the leaderboard."""
