"""Data sets, degradations and the synthetic data generator."""
