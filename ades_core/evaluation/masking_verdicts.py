"""What each gradient-masking check concludes from its numbers: a :class:`CheckResult`.

The checks' verdicts, apart from the attacks that measure them
(:mod:`ades_core.evaluation.masking` runs those): each ``check_*`` function
takes accuracies (fractions in [0, 1]) measured on the same ``n``
clean-correct samples and passes or fails within the binomial noise of a
paired comparison (:func:`noise`); :func:`summarise_checks` is the one line
``ades compare`` shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
from attrs import validators as v

from ades_core.config import format_eps



CHECK_STATUSES: tuple[str, ...] = ("passed", "failed", "not-run")
"""What a check can say: it ran and passed, it ran and failed (a warning), or it could not run."""


@attrs.frozen(kw_only=True)
class CheckResult:
    """One check: its status, a one-line message, and the numbers behind it.

    Attributes:
        status: ``passed``; ``failed``, a warning whose message says which
            number to distrust; or ``not-run``, what the check needs is missing
            (it vouches for nothing: neither passed nor failed).
    """

    name: str
    status: str = attrs.field(validator=v.in_(CHECK_STATUSES))
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)

    @property
    def passed(self) -> bool:
        """Ran and passed (``False`` for a check that did not run)."""
        return self.status == "passed"

    @property
    def failed(self) -> bool:
        """Ran and failed: a warning."""
        return self.status == "failed"

    def to_dict(self) -> dict[str, Any]:
        """``{name, status, passed, message, details}`` for ``eval.json`` (``passed`` as :attr:`passed`)."""
        return {"name": self.name, "status": self.status, "passed": self.passed, "message": self.message,
                "details": dict(self.details)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckResult:
        """A check read back from ``eval.json``; files from before ``status`` existed
        carry only ``passed``, and a black-box check they skipped had ``details.skipped``."""
        details = dict(raw.get("details") or {})
        status = raw.get("status")
        if status is None:
            status = "not-run" if details.get("skipped") else ("passed" if raw.get("passed") else "failed")
        return cls(name=raw["name"], status=status, message=raw.get("message", ""), details=details)


def summarise_checks(checks: Sequence[CheckResult]) -> str:
    """One line: ``"4 passed, 1 not run (black-box)"``; failed and not-run checks are named."""
    if not checks:
        return "none run"
    parts = []
    for status, words in (("passed", "passed"), ("failed", "failed"), ("not-run", "not run")):
        names = [c.name for c in checks if c.status == status]
        if names:
            parts.append(f"{len(names)} {words}" + ("" if status == "passed" else f" ({', '.join(names)})"))
    return ", ".join(parts)


def noise(n: int, accuracy: float, z: float = 2.0) -> float:
    """Tolerance of a paired accuracy comparison on ``n`` samples: ``z`` standard errors, >= 1 sample."""
    if n <= 0:
        return 1.0
    p = min(max(accuracy, 0.0), 1.0)
    return max(z * math.sqrt(p * (1 - p) / n), 1.0 / n)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def check_monotone(
    eps: Sequence[float], acc: Sequence[float], n: int, *, z: float = 2.0, where: str = "", norm: str = "linf"
) -> CheckResult:
    """Robust accuracy must not rise with eps by more than noise."""
    pairs = sorted(zip(eps, acc))
    rises = []
    for (e0, a0), (e1, a1) in zip(pairs, pairs[1:]):
        tolerance = noise(n, max(a0, a1), z)
        if a1 > a0 + tolerance:
            rises.append((e0, a0, e1, a1))
    details = {"eps": [e for e, _ in pairs], "robust_acc": [a for _, a in pairs], "n": n, "where": where}
    if rises:
        e0, a0, e1, a1 = rises[0]
        return CheckResult(
            name="eps-monotone",
            status="failed",
            message=(
                f"robust accuracy rises with eps{where}: {_pct(a0)} at {format_eps(e0, norm)} but "
                f"{_pct(a1)} at {format_eps(e1, norm)} (n={n} clean-correct); gradients may be masked"
            ),
            details=details,
        )
    return CheckResult(
        name="eps-monotone", status="passed", message=f"robust accuracy does not rise with eps{where}",
        details=details,
    )


def check_more_steps(few: float, many: float, n: int, steps: tuple[int, int], *, z: float = 2.0) -> CheckResult:
    """PGD with more steps must not be more accurate; much less accurate means PGD-few had not converged."""
    tolerance = noise(n, max(few, many), z)
    low, high = steps
    details = {f"pgd{low}": few, f"pgd{high}": many, "n": n, "tolerance": tolerance}
    if many > few + tolerance:
        return CheckResult(
            name="more-steps",
            status="failed",
            message=(
                f"PGD-{high} ({_pct(many)}) is more accurate than PGD-{low} ({_pct(few)}) (n={n} clean-correct): "
                "more steps should never help the model; gradients may be masked"
            ),
            details=details,
        )
    if many < few - tolerance:
        return CheckResult(
            name="more-steps",
            status="failed",
            message=(
                f"PGD-{low} has not converged: PGD-{high} is {_pct(few - many)} lower "
                f"({_pct(few)} -> {_pct(many)}, n={n} clean-correct); PGD-{low} flatters this model"
            ),
            details=details,
        )
    return CheckResult(
        name="more-steps", status="passed", message=f"PGD-{high} agrees with PGD-{low} within noise",
        details=details,
    )


def check_black_box(black: float, white: float, n: int, *, z: float = 2.0) -> CheckResult:
    """A black-box attack must not beat the white-box ones by more than noise."""
    tolerance = noise(n, max(black, white), z)
    details = {"square": black, "white_box": white, "n": n, "tolerance": tolerance}
    if black < white - tolerance:
        return CheckResult(
            name="black-box",
            status="failed",
            message=(
                f"black-box Square ({_pct(black)}) beats the white-box attacks ({_pct(white)}) (n={n} clean-correct): "
                "the gradients are not pointing where the model is weak; gradients may be masked"
            ),
            details=details,
        )
    return CheckResult(
        name="black-box", status="passed", message="black-box Square does not beat the white-box attacks",
        details=details,
    )


def check_zero_gradients(zero: int, n: int, max_frac: float = 0.0) -> CheckResult:
    """At most ``max_frac`` of the ``n`` check samples may have an all-zero or non-finite input gradient."""
    fraction = zero / n if n else 0.0
    details = {"zero_or_nonfinite": zero, "fraction": fraction, "n": n, "max_frac": max_frac}
    if fraction > max_frac:
        return CheckResult(
            name="zero-gradients",
            status="failed",
            message=(
                f"{zero} of {n} clean-correct samples ({_pct(fraction)}) have an input gradient that is all "
                "zero or not finite: gradient attacks cannot move them, so their robust accuracy means "
                "nothing; gradients are masked (a quantised or non-differentiable input layer?)"
            ),
            details=details,
        )
    return CheckResult(
        name="zero-gradients", status="passed",
        message="every sample has a finite, non-zero input gradient", details=details,
    )


def check_large_eps(acc: float, eps: float, n: int, max_acc: float, norm: str = "linf") -> CheckResult:
    """At a budget no model resists, accuracy must be near zero."""
    details = {"eps": eps, "norm": norm, "robust_acc": acc, "n": n, "max_acc": max_acc}
    if acc > max_acc:
        return CheckResult(
            name="large-eps",
            status="failed",
            message=(
                f"robust accuracy at {norm} eps {format_eps(eps, norm)} is {_pct(acc)} (n={n} clean-correct), not near zero "
                f"(<= {_pct(max_acc)}); the attack is not reaching the model, or the model barely "
                "depends on its input (a near-constant classifier)"
            ),
            details=details,
        )
    return CheckResult(
        name="large-eps", status="passed", message=f"accuracy at {norm} eps {format_eps(eps, norm)} is near zero",
        details=details
    )


__all__ = [
    "CHECK_STATUSES",
    "CheckResult",
    "check_black_box",
    "check_large_eps",
    "check_monotone",
    "check_more_steps",
    "check_zero_gradients",
    "noise",
    "summarise_checks",
]
