"""Sample-ratio mismatch: chi-square goodness of fit of units per arm against the designed shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy import stats as sps

__all__ = ["SRM_THRESHOLD", "SrmResult", "srm_test"]

SRM_THRESHOLD: Final = 0.001


@dataclass(frozen=True)
class SrmResult:
    """Observed and expected units per arm, chi-square statistic, p-value and verdict."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    threshold: float

    @property
    def mismatch(self) -> bool:
        """True when p < threshold: the split is broken and effects must not be trusted."""
        return self.p_value < self.threshold

    @property
    def verdict(self) -> str:
        """One line for the report."""
        if not sum(self.observed.values()):
            return "no exposed units: the sample ratio cannot be checked (is exposure logged?)"
        if self.mismatch:
            return (
                f"SAMPLE RATIO MISMATCH (p = {self.p_value:.2g} < {self.threshold}): assignment or logging "
                "is broken; do not trust the effects until the cause is found"
            )
        return f"no sample ratio mismatch (p = {self.p_value:.3g} >= {self.threshold})"


def srm_test(
    counts: Mapping[str, int], shares: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SrmResult:
    """Chi-square test of ``counts`` (units per variant) against designed ``shares`` (summing to 1).

    >>> srm_test({"control": 5000, "treatment": 5000}, {"control": 0.5, "treatment": 0.5}).mismatch
    False
    """
    if set(counts) != set(shares):
        raise ValueError(
            f"variants in the data {sorted(counts)} differ from the designed variants {sorted(shares)}; "
            "check the experiment name and the variant labels in the log"
        )
    names = list(shares)
    observed = np.array([counts[k] for k in names], dtype=np.float64)
    total = observed.sum()
    expected = np.array([shares[k] for k in names]) * total
    if total == 0:
        stat, p = 0.0, 1.0
    else:
        stat = float(((observed - expected) ** 2 / expected).sum())
        p = float(sps.chi2.sf(stat, len(names) - 1))
    return SrmResult(
        observed={k: int(counts[k]) for k in names},
        expected=dict(zip(names, expected.tolist(), strict=True)),
        statistic=stat,
        p_value=p,
        threshold=threshold,
    )
