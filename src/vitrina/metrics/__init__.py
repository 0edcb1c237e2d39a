"""Full-catalogue top-k metrics: accuracy (HR, recall, precision, NDCG, MRR, MAP) and beyond accuracy
(coverage, novelty, ARP, ILD, serendipity).

Inputs are a ``topk`` int array (n_users, k) of item indices, best first, ``-1`` for an empty
slot, and a ``truth`` sparse (n_users, n_items) matrix whose entries > 0 are relevant. Per-user
functions return float64 arrays with NaN for users they cannot evaluate; ``compute_metrics``
averages them. Formulas and conventions: ``docs/metrics.md``.

Stability: the names in ``__all__``, their signatures and the ``compute_metrics`` keys are public API.
"""

from vitrina.metrics._average_precision import average_precision
from vitrina.metrics._compute import compute_metrics, per_user_metrics
from vitrina.metrics._coverage import coverage
from vitrina.metrics._diversity import intra_list_diversity
from vitrina.metrics._hit_rate import hit_rate
from vitrina.metrics._mrr import mrr
from vitrina.metrics._ndcg import ndcg
from vitrina.metrics._popularity import average_popularity, novelty
from vitrina.metrics._precision import precision
from vitrina.metrics._recall import recall
from vitrina.metrics._serendipity import serendipity

__all__ = [
    "average_popularity",
    "average_precision",
    "compute_metrics",
    "coverage",
    "hit_rate",
    "intra_list_diversity",
    "mrr",
    "ndcg",
    "novelty",
    "per_user_metrics",
    "precision",
    "recall",
    "serendipity",
]
