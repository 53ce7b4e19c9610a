"""Gradient-masking sanity checks: the signs that an evaluation flatters a model.

A defense that breaks gradients (quantised or randomised inputs, saturated
softmax, shattered gradients) looks robust to gradient attacks without being
robust. Five symptoms give it away (Athalye et al. 2018; Carlini et al. 2019,
"On Evaluating Adversarial Robustness", section 5; Croce & Hein 2020):

``zero-gradients``
    the input gradient of the cross-entropy must not be all zero (or not
    finite) on any check sample: a gradient attack cannot move such a sample
    at all (a quantised or otherwise non-differentiable input layer). Only
    this check sees such a model when Square cannot run: its PGD accuracy
    equals its clean accuracy at every budget and every number of steps, so
    the ladder is flat and more steps change nothing;
``eps-monotone``
    robust accuracy must not rise as the budget grows (PGD-20 on a ladder of
    budgets, and on the ``--eps-sweep`` when one was run);
``more-steps``
    PGD-100 must not be more accurate than PGD-20; and a PGD-100 far *below*
    PGD-20 means PGD-20 had not converged (the PGD-20 number flatters);
``black-box``
    Square, which uses no gradient, must not do better than the gradient
    attacks (PGD-20 and PGD-100, per-sample worst case);
``large-eps``
    at a budget no model resists accuracy must be near zero: 64/255 in
    L-inf; in L2, ``64/255 * sqrt(d)`` for images of ``d = C * H * W``
    pixels (13.9 on CIFAR-10), the smallest L2 ball that holds the L-inf ball
    of 64/255, so an L2 attack that breaks nothing there also found nothing
    in that L-inf ball (:meth:`~ades_core.norms.ThreatNorm.large_budget`).

Every check runs in the evaluation's norm (``norm=``): its PGD steps
``max(2/255, 2.5 * eps / steps)`` in L-inf, ``2.5 * eps / steps`` in L2 (so
each run can cross its ball), Square is the norm's official Square, and the
ladder's budgets are capped at the ball that holds the whole box (1 in L-inf,
``sqrt(d)`` in L2).

All five run on the same ``n`` samples: drawn at random (from the seed) among
the *clean-correct* evaluation samples, so that every sample can show an
effect (a clean-wrong sample is never robust, whatever the attack) and no
class dominates (evaluation sets are often ordered by class). A model that
barely depends on its input keeps its clean-correct samples at 64/255 and
fails ``large-eps``, instead of passing every check vacuously on samples it
never got right.
"Noise" is a paired-comparison tolerance: two binomial standard errors of the
larger accuracy, and never less than one sample. A failed check is a
*warning*: the numbers are reported, and the check says which to distrust. A
check that could not run (Square without pyautoattack) is reported as
``not-run``: it vouches for nothing, and is never shown as passed.

This module runs the attacks that measure the checks; what each check
concludes from its numbers (:class:`CheckResult`, the ``check_*`` verdicts,
the noise tolerance) lives in :mod:`ades_core.evaluation.masking_verdicts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import torch
from attrs import validators as v
from torch import Tensor, nn

from ades_core.attacks.autoattack import Square, pyautoattack_available
from ades_core.attacks.gradients import loss_input_gradient
from ades_core.attacks.losses import cross_entropy
from ades_core.config import format_eps
from ades_core.data import DeviceLoader, ImageTensors
from ades_core.distributed import DistributedContext
from ades_core.evaluation.resume import ResumeStore
from ades_core.evaluation.runner import Outcome, attack_outcome
from ades_core.evaluation.masking_verdicts import (  # noqa: F401  (re-exported: the checks' public home was here)
    CHECK_STATUSES,
    CheckResult,
    check_black_box,
    check_large_eps,
    check_monotone,
    check_more_steps,
    check_zero_gradients,
    noise,
    summarise_checks,
)
from ades_core.evaluation.specs import DEFAULT_ALPHA, pgd_spec
from ades_core.model_mode import eval_mode
from ades_core.norms import NORMS


def check_samples(clean: Tensor, n: int, seed: int) -> Tensor:
    """Sorted int64 indices of ``n`` clean-correct samples (bool ``(N,)`` ``clean``), drawn
    with a generator of its own seeded by ``seed``; all of them when fewer are correct."""
    correct = clean.nonzero().squeeze(1)
    order = torch.randperm(len(correct), generator=torch.Generator().manual_seed(seed))
    return correct[order[:n]].sort().values


@attrs.frozen(kw_only=True)
class MaskingCheckConfig:
    """How the gradient-masking checks run.

    Attributes:
        n: samples the checks use: a seeded random draw of ``n`` clean-correct
            evaluation samples (all of them when fewer are correct).
        ladder: budgets of the monotonicity check, as multiples of the
            evaluation budget (the large budget is appended).
        large_eps: the budget at which accuracy must be near zero, in the
            evaluation's norm; ``None``: the norm's (64/255 in L-inf,
            ``64/255 * sqrt(d)`` in L2).
        large_eps_max_acc: the largest accuracy at ``large_eps`` that passes.
        steps: PGD steps of the ladder and of the base of ``more-steps``.
        more_steps: PGD steps compared with ``steps``.
        square_queries: queries of the black-box Square attack (fewer than
            AutoAttack's 5000 only makes the check more conservative: a weaker
            black-box attack beating the white-box ones is a stronger signal).
        noise_z: the tolerance in binomial standard errors.
        zero_gradients_max_frac: the largest fraction of check samples with an
            all-zero or non-finite input gradient that passes (0: none, as
            AutoAttack's own check).
    """

    n: int = attrs.field(default=200, validator=v.ge(1))
    ladder: tuple[float, ...] = attrs.field(default=(0.25, 0.5, 1.0, 2.0), converter=tuple)
    large_eps: float | None = attrs.field(default=None, validator=v.optional(v.gt(0.0)))
    large_eps_max_acc: float = attrs.field(default=0.05, validator=[v.ge(0.0), v.le(1.0)])
    steps: int = attrs.field(default=20, validator=v.ge(1))
    more_steps: int = attrs.field(default=100, validator=v.ge(1))
    square_queries: int = attrs.field(default=1000, validator=v.ge(1))
    noise_z: float = attrs.field(default=2.0, validator=v.ge(0.0))
    zero_gradients_max_frac: float = attrs.field(default=0.0, validator=[v.ge(0.0), v.le(1.0)])


SQUARE_L2_MIN_SIDE = 5
"""The smallest image side the official L2 Square runs on (it divides the side by 5)."""

def zero_gradient_samples(
    model: nn.Module,
    data: ImageTensors,
    *,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """bool ``(N,)`` on the CPU: the samples of ``data`` whose input gradient of the
    cross-entropy (at the clean image, true label) is all zero or has a non-finite entry.

    The gradient is the one the attacks follow (:func:`~ades_core.attacks.gradients.loss_input_gradient`,
    float32 direction under autocast). The model runs in eval mode (its modes
    restored after); parameter gradients are not touched.
    """
    flags = []
    loader = DeviceLoader(data, batch_size=batch_size, device=device, shuffle=False, augment=False)
    with eval_mode(model):
        for x, y, _ in loader:
            grad, _ = loss_input_gradient(model, x, y, cross_entropy, autocast_dtype=autocast_dtype)
            flat = grad.flatten(1)
            flags.append((flat == 0).all(dim=1) | ~torch.isfinite(flat).all(dim=1))
    return torch.cat(flags).cpu() if flags else torch.zeros(0, dtype=torch.bool)


def run_masking_checks(
    model: nn.Module,
    data: ImageTensors,
    eps: float,
    *,
    clean: Tensor,
    config: MaskingCheckConfig = MaskingCheckConfig(),
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    sweep: tuple[Sequence[float], Sequence[float], int] | None = None,
    progress: Callable[[str], None] | None = None,
    distributed: DistributedContext | None = None,
    resume: ResumeStore | None = None,
    norm: str = "linf",
) -> list[CheckResult]:
    """Run the five checks on ``config.n`` random clean-correct samples of ``data``, in ``norm``.

    Args:
        clean: bool ``(N,)``, clean correctness of ``data`` (from the evaluation).
        sweep: ``(eps values, robust accuracies, n)`` of an eps sweep already
            run on the whole set, checked for monotonicity too.
        progress: called with a short description before each attack run.
        distributed: this rank's context under ``torchrun``: every attack run
            is sharded over the ranks and every rank returns the same checks.
        resume: the evaluation's resume state; each attack run of the checks
            keeps its finished batches there (rows named ``check:...``).

    The black-box check is reported ``not-run`` when pyautoattack is not
    installed. ``zero-gradients`` computes one gradient per sample, the same on
    every rank.
    """
    chosen = check_samples(clean, config.n, seed)
    count = len(chosen)
    subset = ImageTensors(data.images[chosen], data.labels[chosen], data.classes)
    clean = torch.ones(count, dtype=torch.bool)
    say = progress or (lambda text: None)

    threat = NORMS.get(norm)
    dims = data.images[0].numel() if len(data) else 1
    large_eps = config.large_eps if config.large_eps is not None else threat.large_budget(dims)

    def run(spec_steps: int, budget: float) -> Outcome:
        # reach the edge of a large ball: L-inf at least 2/255, L2 2.5 * eps / steps (alpha None)
        alpha = max(DEFAULT_ALPHA, 2.5 * budget / spec_steps) if norm == "linf" else None
        attack = pgd_spec(spec_steps, alpha=alpha, norm=norm).build(autocast_dtype=autocast_dtype)
        say(f"check: {norm} PGD-{spec_steps} at {format_eps(budget, norm)} on {count}")
        return attack_outcome(
            model, subset, attack, budget, clean=clean, batch_size=batch_size, device=device,
            seed=seed, autocast_dtype=autocast_dtype, distributed=distributed,
            checkpoint=None if resume is None else resume.row(f"check:pgd{spec_steps}@{budget!r}"), norm=norm,
        )

    say(f"check: input gradients on {count}")
    zero = zero_gradient_samples(model, subset, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype)
    gradients = check_zero_gradients(int(zero.sum()), count, config.zero_gradients_max_frac)

    whole_box = threat.diameter(dims)
    ladder = sorted({min(whole_box, f * eps) for f in config.ladder if f * eps > 0} | {large_eps})
    outcomes = {budget: run(config.steps, budget) for budget in ladder}
    if eps not in outcomes:
        outcomes[eps] = run(config.steps, eps)
    z = config.noise_z
    results = [
        gradients,
        check_monotone(
            list(outcomes), [o.accuracy for o in outcomes.values()], count, z=z, where=" (PGD ladder)", norm=norm
        ),
    ]
    if sweep is not None and len(sweep[0]) >= 2:
        results.append(check_monotone(sweep[0], sweep[1], sweep[2], z=z, where=" (eps sweep)", norm=norm))

    base = outcomes[eps]
    more = run(config.more_steps, eps)
    results.append(check_more_steps(base.accuracy, more.accuracy, count, (config.steps, config.more_steps), z=z))

    too_small = norm == "l2" and min(data.images.shape[-2:]) < SQUARE_L2_MIN_SIDE
    if pyautoattack_available() and not too_small:
        say(f"check: {norm} Square ({config.square_queries} queries) at {format_eps(eps, norm)} on {count}")
        square = attack_outcome(
            model, subset, Square(n_queries=config.square_queries, norm=norm), eps, clean=clean,
            batch_size=batch_size, device=device, seed=seed, autocast_dtype=autocast_dtype,
            distributed=distributed,
            checkpoint=None if resume is None else resume.row(f"check:square{config.square_queries}@{eps!r}"),
            norm=norm,
        )
        white = float((base.correct & more.correct).float().mean()) if count else 0.0
        results.append(check_black_box(square.accuracy, white, count, z=z))
    elif too_small:
        results.append(
            CheckResult(
                name="black-box", status="not-run",
                message=(
                    f"not run: the official L2 Square draws squares of a fifth of the image side and needs "
                    f"images of at least {SQUARE_L2_MIN_SIDE} x {SQUARE_L2_MIN_SIDE} pixels"
                ),
                details={"needs": f"images >= {SQUARE_L2_MIN_SIDE} px"},
            )
        )
    else:
        results.append(
            CheckResult(
                name="black-box", status="not-run",
                message="not run: Square needs pyautoattack (pip install pyautoattack==0.2.0)",
                details={"needs": "pyautoattack"},
            )
        )

    large = outcomes[large_eps]
    results.append(check_large_eps(large.accuracy, large_eps, count, config.large_eps_max_acc, norm))
    return results
