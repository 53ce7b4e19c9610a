"""Budgeted attacks (per-sample L-inf budgets) and the losses they maximise.

Registered attacks: ``pgd`` (training and evaluation), ``fgsm`` (quick
checks), the official ``autoattack`` (also ``autoattack-rand`` and
``autoattack-plus``) and ``square`` from pyautoattack
(:mod:`ades_core.attacks.autoattack`), and torchattacks' re-implementation
``autoattack-torchattacks`` for comparison
(:mod:`ades_core.attacks.torchattacks_autoattack`).
"""

from ades_core.attacks import autoattack, fgsm, losses, pgd, torchattacks_autoattack  # noqa: F401  (registration)
from ades_core.attacks.autoattack import AutoAttack, Square
from ades_core.attacks.fgsm import FGSM
from ades_core.attacks.pgd import PGD, budget_column
from ades_core.attacks.scalar_budget import MissingDependencyError, ScalarBudgetAttack
from ades_core.attacks.torchattacks_autoattack import TorchattacksAutoAttack, torchattacks_available

__all__ = [
    "FGSM",
    "PGD",
    "AutoAttack",
    "MissingDependencyError",
    "ScalarBudgetAttack",
    "Square",
    "TorchattacksAutoAttack",
    "budget_column",
    "torchattacks_available",
]
