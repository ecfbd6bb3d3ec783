"""Latency lookup tables and predictors (built on devices/ measurements)."""
