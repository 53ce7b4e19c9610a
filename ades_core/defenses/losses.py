"""The outer training losses of the budgeted defenses, per sample, and the inner attack each needs.

A budgeted defense (pgd-at, static-des, ades; trades and mart are pgd-at's
fixed budget with their own loss) trains on one of these, chosen by
``DefenseOptions.loss``. Each returns one value per sample, ``(B,)``; the
defense's loss is their mean. Logits are ``(B, K)``, labels ``(B,)``.

* ``ce`` (Madry et al., ICLR 2018): ``CE(f(x_adv), y)``; the inner attack
  maximises the configured attack loss (CE) from a uniform start in the ball.
* ``trades`` (Zhang et al., ICML 2019, "Theoretically Principled Trade-off
  between Robustness and Accuracy"): ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))``,
  gradients through both distributions, mean over the batch (their code's
  ``batchmean``). The inner attack maximises ``KL(p(x) || p(x'))`` with sign
  steps from ``x + 0.001 * N(0, 1)``, ``p(x)`` the clean softmax in eval mode.
* ``mart`` (Wang et al., ICLR 2020, "Improving Adversarial Robustness Requires
  Revisiting Misclassified Examples"): ``BCE(p(x_adv), y) + beta * KL(p(x) ||
  p(x_adv)) * (1 - p_y(x))`` with the boosted cross-entropy ``BCE = CE(f(x_adv), y)
  - log(1 - max_{k != y} p_k(x_adv))``. The inner attack is PGD on CE from
  ``x + 0.001 * N(0, 1)``, as in their code.

``beta`` defaults to 6 for both (``DefenseOptions.beta``): TRADES's CIFAR-10
setting (their 1/lambda) and the default of MART's released code (the MART
paper tunes its lambda per setting).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch
from torch import Tensor
from torch.nn import functional as F

from ades_core.attacks.losses import kl_to_target
from ades_core.config import TRAINING_LOSSES, ConfigError
from ades_core.config.defense_options import KL_INNER_LOSSES
from ades_core.config.rules import kl_inner_attack_loss
from ades_core.protocols import BudgetedAttack, ReplaceableAttack


def _kl_clean_to_adv(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
    """``KL(softmax(clean) || softmax(adv))`` per sample ``(B,)``, gradients through both."""
    log_clean = F.log_softmax(logits_clean, dim=1)
    log_adv = F.log_softmax(logits_adv, dim=1)
    return (log_clean.exp() * (log_clean - log_adv)).sum(dim=1)


def adversarial_cross_entropy(
    logits_adv: Tensor, y: Tensor, logits_clean: Tensor | None = None, beta: float = 0.0
) -> Tensor:
    """Madry's loss ``CE(f(x_adv), y)`` per sample; ``logits_clean`` and ``beta`` are unused."""
    return F.cross_entropy(logits_adv.float(), y, reduction="none")


def trades_loss(logits_adv: Tensor, y: Tensor, logits_clean: Tensor | None, beta: float) -> Tensor:
    """TRADES per sample: ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))``.

    ``logits_clean`` ``(B, K)`` must carry the model's graph (train mode, as
    in TRADES's code); with ``beta = 0`` this is exactly clean cross-entropy.
    """
    if logits_clean is None:
        raise ValueError("the trades loss needs the clean logits f(x)")
    clean, adv = logits_clean.float(), logits_adv.float()
    return F.cross_entropy(clean, y, reduction="none") + beta * _kl_clean_to_adv(clean, adv)


def boosted_cross_entropy(logits_adv: Tensor, y: Tensor) -> Tensor:
    """MART's BCE per sample: ``CE(f(x_adv), y) - log(1 - max_{k != y} p_k(x_adv))``.

    ``log(1 - p_k) = logsumexp_{j != k} z_j - logsumexp_j z_j`` exactly, so
    the margin term needs no offset inside the log (MART's code adds 1e-4 and
    1e-12 there; the difference is below 1e-4 relative where their offset is
    not the whole term). Needs at least two classes.
    """
    logits = logits_adv.float()
    lowest = torch.finfo(logits.dtype).min
    others = logits.scatter(1, y[:, None], lowest)
    runner_up = others.argmax(dim=1, keepdim=True)
    without_runner_up = logits.scatter(1, runner_up, lowest)
    log_not_runner_up = torch.logsumexp(without_runner_up, dim=1) - torch.logsumexp(logits, dim=1)
    return F.cross_entropy(logits, y, reduction="none") - log_not_runner_up


def mart_loss(logits_adv: Tensor, y: Tensor, logits_clean: Tensor | None, beta: float) -> Tensor:
    """MART per sample: ``BCE(p(x_adv), y) + beta * KL(p(x) || p(x_adv)) * (1 - p_y(x))``.

    As in MART's code, the weight ``1 - p_y(x)`` is not detached: the clean
    logits ``(B, K)`` carry the model's graph (train mode).
    """
    if logits_clean is None:
        raise ValueError("the mart loss needs the clean logits f(x)")
    clean, adv = logits_clean.float(), logits_adv.float()
    true_prob = F.softmax(clean, dim=1).gather(1, y[:, None]).squeeze(1)
    robust = _kl_clean_to_adv(clean, adv) * (1.0 - true_prob)
    return boosted_cross_entropy(adv, y) + beta * robust


PerSampleLoss = Callable[[Tensor, Tensor, "Tensor | None", float], Tensor]


@attrs.frozen
class TrainingLoss:
    """One outer loss and the inner maximisation it goes with.

    Attributes:
        name: ``ce``, ``trades`` or ``mart``.
        per_sample: ``(logits_adv (B, K), y (B,), logits_clean (B, K) or None,
            beta) -> (B,)``.
        uses_clean: whether ``per_sample`` needs the clean logits with the
            model's graph (one more training forward, on ``x``, before ``x_adv``'s).
        inner_kl: the inner attack maximises ``KL(p(x) || p(x'))`` (its target is
            the clean softmax) instead of the configured attack loss on labels.
        start_noise: the inner attack's random start, ``uniform`` (keep the
            attack's) or ``normal`` (``x + 0.001 * N(0, 1)``).
    """

    name: str
    per_sample: PerSampleLoss
    uses_clean: bool
    inner_kl: bool = False
    start_noise: str = "uniform"

    def inner_attack(self, attack: BudgetedAttack) -> BudgetedAttack:
        """``attack`` set up for this loss's inner maximisation (``attack`` itself for ``ce``).

        Raises:
            ConfigError: ``trades`` with an attack that cannot maximise the KL
                (not PGD), or with an attack loss other than ``ce`` (which the
                config already refuses, :func:`~ades_core.config.rules.check_inner_attack_loss`;
                checked again here for an attack built directly).
        """
        if self.name == "ce":
            return attack
        if self.inner_kl:
            if not isinstance(attack, ReplaceableAttack):
                raise ConfigError(
                    "attack.name",
                    f"the {self.name} loss maximises a KL in its inner attack, which needs the pgd "
                    f"attack; got {type(attack).__name__}",
                )
            if attack.loss_name != "ce":
                raise kl_inner_attack_loss(self.name, attack.loss_name)
            return attack.replace(loss=kl_to_target, start_noise=self.start_noise)
        return attack.replace(start_noise=self.start_noise) if isinstance(attack, ReplaceableAttack) else attack

    def attack_target(self, y: Tensor, clean_logits: Tensor | None) -> Tensor:
        """What the inner attack compares with: labels ``y``, or for ``inner_kl`` the
        detached clean probabilities ``(B, K)`` from the eval-mode ``clean_logits``."""
        if not self.inner_kl:
            return y
        if clean_logits is None:
            raise ValueError(f"the {self.name} inner attack needs the clean logits")
        return F.softmax(clean_logits.detach().float(), dim=1)


TRAINING_LOSS_SPECS: dict[str, TrainingLoss] = {
    "ce": TrainingLoss("ce", adversarial_cross_entropy, uses_clean=False),
    "trades": TrainingLoss("trades", trades_loss, uses_clean=True, inner_kl=True, start_noise="normal"),
    "mart": TrainingLoss("mart", mart_loss, uses_clean=True, start_noise="normal"),
}
"""Every name of :data:`ades_core.config.TRAINING_LOSSES` -> its :class:`TrainingLoss`."""

if set(TRAINING_LOSS_SPECS) != set(TRAINING_LOSSES):  # pragma: no cover - a developer's slip
    raise RuntimeError(f"training losses {sorted(TRAINING_LOSS_SPECS)} differ from {TRAINING_LOSSES}")
if {n for n, spec in TRAINING_LOSS_SPECS.items() if spec.inner_kl} != set(KL_INNER_LOSSES):  # pragma: no cover
    raise RuntimeError(f"the KL inner losses differ from {KL_INNER_LOSSES}")


def training_loss(name: str) -> TrainingLoss:
    """The :class:`TrainingLoss` called ``name``; a one-line error lists the known ones."""
    try:
        return TRAINING_LOSS_SPECS[name]
    except KeyError:
        raise ConfigError(
            "defense_options.loss", f"{name!r} is not one of: {', '.join(TRAINING_LOSS_SPECS)}"
        ) from None
