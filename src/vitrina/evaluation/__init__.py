"""Evaluation: full-catalogue metrics of a model on a split, and the benchmark runner.

``evaluate_model(model, split)`` fits and scores one model in one call; ``run_benchmark`` runs
a configuration (and model instances) and writes the results.
"""

from vitrina.evaluation.api import evaluate_model, fit_on_split

__all__ = ["evaluate_model", "fit_on_split"]
