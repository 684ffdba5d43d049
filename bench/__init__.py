"""The benchmark suite (`python -m bench`): figures and targets, never asserted by tests."""
