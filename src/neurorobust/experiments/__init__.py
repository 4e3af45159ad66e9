"""Experiment runner (spec -> stages) and sweeps."""
