"""Multi-objective search for Pareto-optimal subnets with Optuna (edgenas search)."""
