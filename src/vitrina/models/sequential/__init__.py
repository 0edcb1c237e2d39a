"""Sequential transformers (SASRec, BERT4Rec, gSASRec, eSASRec) assembled from swappable parts."""

from vitrina.models.sequential.model import SequentialTransformer

__all__ = ["SequentialTransformer"]
