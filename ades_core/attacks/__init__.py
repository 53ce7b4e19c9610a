"""Budgeted attacks (per-sample L-inf budgets) and the losses they maximise.

Registered attacks: ``pgd`` (training and evaluation), ``fgsm`` (quick
checks), ``autoattack`` and ``square`` (from the optional torchattacks; see
:mod:`ades_core.attacks.autoattack`).
"""

from ades_core.attacks import autoattack, fgsm, losses, pgd  # noqa: F401  (registration)
from ades_core.attacks.autoattack import AutoAttack, MissingDependencyError, Square, torchattacks_available
from ades_core.attacks.fgsm import FGSM
from ades_core.attacks.pgd import PGD, budget_column

__all__ = [
    "FGSM",
    "PGD",
    "AutoAttack",
    "MissingDependencyError",
    "Square",
    "budget_column",
    "torchattacks_available",
]
