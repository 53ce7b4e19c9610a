"""Fast-AT (Wong, Rice, Kolter, ICLR 2020, "Fast is better than free: Revisiting adversarial training").

FGSM adversarial training made to work by a random start: ``delta`` is drawn
uniformly in the L-inf ball of radius ``eps`` (and clipped so ``x + delta`` lies
in [0, 1]), then one signed-gradient step of size ``alpha = 1.25 * eps`` (their
default, ``DefenseOptions.fast_alpha_ratio``) is taken and projected back onto
the ball and the box. One input gradient per training step, then the usual
cross-entropy update on ``x_adv``.

That is exactly one-step PGD with a uniform random start, so Fast-AT is
PGD-AT (:class:`~ades_core.defenses.budgeted.BudgetedAdversarialTraining` with
the fixed budget) with a one-step attack of step ``fast_alpha_ratio * eps``;
``--steps`` and ``--alpha`` do not apply. Out of scope: their cyclic learning
rate, early stopping on a PGD check, and apex mixed precision (ades's own
schedule, evaluation and ``--amp`` apply). Unlike their code, the attack's
forward runs in eval mode (BatchNorm statistics are moved only by the
training forward), as for every ades attack.
"""

from __future__ import annotations

import attrs

from ades_core.attacks.pgd import PGD
from ades_core.config import ConfigError, RunConfig
from ades_core.defenses.budgeted import BudgetedAdversarialTraining, DefenseParts


def check_fast_at_config(config: RunConfig) -> None:
    """fast-at's own rule (its ``DefenseInfo.check``, run when the config is built).

    Raises:
        ConfigError: ``budget.eps`` is 0 (the FGSM step ``fast_alpha_ratio * eps`` would be 0).
    """
    if config.budget.eps <= 0:
        raise ConfigError("budget.eps", "fast-at needs a positive eps (its step is fast_alpha_ratio * eps), got 0")


def fast_at_attack(parts: DefenseParts) -> PGD:
    """One-step PGD from a uniform start in the ball, step ``fast_alpha_ratio * eps`` (eps > 0:
    :func:`check_fast_at_config`)."""
    eps = parts.budget.eps
    return PGD(
        steps=1,
        alpha=parts.options.fast_alpha_ratio * eps,
        random_start=True,
        start_noise="uniform",
        loss=parts.attack_options.loss,
        autocast_dtype=parts.autocast_dtype,
        bn_mode=parts.attack_options.bn,
    )


def fast_at_defense(parts: DefenseParts) -> BudgetedAdversarialTraining:
    """The ``DEFENSES`` factory of ``fast-at``: PGD-AT's fixed budget with :func:`fast_at_attack`."""
    return BudgetedAdversarialTraining("fast-at", attrs.evolve(parts, attack=fast_at_attack(parts)), loss="ce")
