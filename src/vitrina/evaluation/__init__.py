"""Evaluation: full-catalogue metrics of a model on a split, and the benchmark runner.

``evaluate_model(model, split)`` fits and scores one model in one call; ``run_benchmark`` runs
a configuration (and model instances) and writes the results. Attributes load on first use, so
importing ``vitrina.evaluation.defaults`` (the CLI's help) stays free of the numeric stack.
"""

from typing import Any

__all__ = ["evaluate_model", "fit_on_split"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vitrina.evaluation import api

        return getattr(api, name)
    raise AttributeError(f"module 'vitrina.evaluation' has no attribute {name!r}")
