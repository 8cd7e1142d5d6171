"""Reproducible measurements of hilas against independent baselines (not part of the test suite)."""
