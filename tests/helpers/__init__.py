"""Shared helpers of the test suite: models, data, fits and readers; no test module imports another."""
