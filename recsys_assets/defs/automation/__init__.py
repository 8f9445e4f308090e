"""Declarative automation: which assets refresh by themselves, and the sensor that evaluates it."""
