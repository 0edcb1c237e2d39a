"""Defaults of :class:`~vitrina.evaluation.config.BenchmarkConfig`, in a module with no imports, so
``vitrina benchmark --help`` shows them without loading pydantic or the numeric stack."""

METRIC_NAMES = (
    "ndcg",
    "hr",
    "recall",
    "precision",
    "mrr",
    "map",
    "coverage",
    "novelty",
    "arp",
    "ild",
    "serendipity",
)
DEFAULTS = {
    "split": "loo",
    "validation_users": 2048,
    "test_ratio": 0.2,
    "windows": 3,
    "k": 10,
    "metrics": ("ndcg", "hr", "recall", "mrr", "coverage"),
    "seed": 0,
}
# file extensions -> format, for `--dataset FILE` without `--format`
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
