"""Datasets (one module per family), splits, samplers and transforms."""
