"""Models: one interface (:class:`~vitrina.models.base.Recommender`), a registry of named models,
and the top-k selection they share with serving."""

from vitrina.models._topk import topk

__all__ = ["topk"]
