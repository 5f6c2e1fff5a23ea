"""Evaluation: benchmarks x methods, the papers' metrics, and reports."""
