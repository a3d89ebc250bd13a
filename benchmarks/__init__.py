"""Ratio benchmarks: each case measures ours against a baseline in the same run (`python -m benchmarks`)."""
