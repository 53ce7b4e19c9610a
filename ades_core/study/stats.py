"""Statistics of a study: mean and spread over seeds, paired differences with a t interval.

Everything here is plain Python (no SciPy at run time). Student's t
distribution is computed from the regularised incomplete beta function
(a continued fraction, evaluated with the modified Lentz method), and its
quantiles by bisection on the CDF: accurate to about 1e-10, far beyond the
two decimals a table prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs

from ades_core.errors import AdesError


class StatisticsError(AdesError, ValueError):
    """Too few values for the statistic asked for; one line."""


# ---------------------------------------------------------------- Student's t


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, precision = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < precision:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1]."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if df <= 0:
        raise StatisticsError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p``-quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 4)`` = 2.776).

    Raises:
        StatisticsError: ``p`` outside (0, 1) or ``df`` <= 0.
    """
    if not 0.0 < p < 1.0:
        raise StatisticsError(f"a quantile needs p in (0, 1), got {p}")
    if df <= 0:
        raise StatisticsError(f"degrees of freedom must be > 0, got {df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# ---------------------------------------------------------------- summaries


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for one value).

    Raises:
        StatisticsError: no values.
    """
    if not values:
        raise StatisticsError("a mean needs at least one value, got none")
    mean = math.fsum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


@attrs.frozen(kw_only=True)
class PairedDifference:
    """``arm - reference`` over the seeds both have, with a two-sided t interval.

    Attributes:
        seeds: the paired seeds, ascending; ``n`` of them.
        differences: per seed, ``arm[seed] - reference[seed]`` (the metric's unit).
        mean, std: of the differences (std with n - 1).
        t: the t quantile used, ``t_{(1 + confidence) / 2, n - 1}``.
        low, high: ``mean -/+ t * std / sqrt(n)``.
    """

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    std: float
    t: float
    low: float
    high: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: n, seeds, differences, mean, std, t, low, high, confidence."""
        record = attrs.asdict(self, recurse=False)
        return {"n": self.n, **record, "seeds": list(self.seeds), "differences": list(self.differences)}


def paired_difference(
    arm: Mapping[int, float], reference: Mapping[int, float], *, confidence: float = 0.95
) -> PairedDifference:
    """The mean of ``arm[s] - reference[s]`` over common seeds ``s`` and its t interval.

    With n paired seeds the interval is ``mean +/- t_{(1+confidence)/2, n-1} * sd / sqrt(n)``,
    ``sd`` the differences' sample standard deviation: the paired t interval.

    Raises:
        StatisticsError: fewer than 2 common seeds (no spread, so no interval).
    """
    if not 0.0 < confidence < 1.0:
        raise StatisticsError(f"confidence must be in (0, 1), got {confidence}")
    seeds = tuple(sorted(set(arm) & set(reference)))
    if len(seeds) < 2:
        raise StatisticsError(f"a paired interval needs at least 2 common seeds, got {len(seeds)} ({list(seeds)})")
    differences = tuple(arm[s] - reference[s] for s in seeds)
    mean, spread = mean_std(differences)
    std = spread if spread is not None else 0.0  # n >= 2: always a number
    t = t_quantile(0.5 + confidence / 2.0, len(seeds) - 1)
    half = t * std / math.sqrt(len(seeds))
    return PairedDifference(
        seeds=seeds, differences=differences, mean=mean, std=std, t=t, low=mean - half, high=mean + half,
        confidence=confidence,
    )
