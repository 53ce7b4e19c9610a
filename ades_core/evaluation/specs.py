"""Evaluation attacks by name: ``pgd20``, ``pgd100``, ``cw``, ``fgsm``, ``autoattack``, ``square``, ...

An :class:`AttackSpec` names one attack of an evaluation: a label for tables
and ``eval.json`` (``pgd20``), the registered attack it builds (``pgd`` in
:data:`~ades_core.registries.ATTACKS`) and that attack's options. Names are
resolved by :func:`resolve_attack`:

Every name resolves in a norm (``norm=``, :mod:`ades_core.norms`): ``linf``
(the default) or ``l2``; an attack that does not support the norm is refused.

==============  =============================================================
``pgdN``        PGD, N steps, random start, cross-entropy (``pgd20`` is the
                paper's evaluation attack); L-inf: alpha 2/255, sign steps;
                L2: alpha ``2.5 * eps / N``, normalised steps
``cw`` / ``cwN``  the same PGD maximising the CW margin loss (``cw`` = 20 steps)
``fgsm``        one sign step of size eps (L2: one normalised step; quick checks only)
``autoattack``  the official standard AutoAttack (APGD-CE, APGD-T, FAB-T,
                Square; the authors' code from pyautoattack), its L-inf or
                its L2 version
``autoattack-rand``  the official version for randomised models (EOT)
``autoattack-plus``  the official AutoAttack+ (restarts, untargeted components)
``autoattack-torchattacks``  torchattacks' re-implementation, for comparison
``square``      the official Square, 5000 queries: black-box
any other       a name registered in ``ATTACKS`` (plugins too), default options
==============  =============================================================
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

import attrs
import torch

from ades_core.config import AttackOptions, format_eps
from ades_core.errors import AdesError
from ades_core.norms import NORMS, STEP_SCALE
from ades_core.protocols import BudgetedAttack, ReportsSettings
from ades_core.registries import ATTACKS
from ades_core.registry import RegistryError

def _ades_version() -> str:
    try:
        return importlib.metadata.version("ades")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


DEFAULT_ALPHA = 2 / 255
"""PGD step size of the L-inf evaluation attacks ([0, 1] pixel scale); L2 ones step
``2.5 * eps / steps`` (``alpha=None``, :data:`~ades_core.norms.STEP_SCALE`)."""

GRADIENT_FREE = frozenset({"autoattack", "autoattack-plus", "autoattack-torchattacks", "square"})
"""Registered attacks that are not purely gradient-based (AutoAttack holds Square)."""



class AttackSpecError(AdesError, ValueError):
    """An evaluation attack that cannot be used as given (its steps, its norm, repeated, not an
    attack); one line. Unknown names are a :class:`~ades_core.registry.RegistryError`."""


_PGD = re.compile(r"^pgd(\d+)$")
_CW = re.compile(r"^cw(\d+)$")


@attrs.frozen(kw_only=True)
class AttackSpec:
    """One attack of an evaluation.

    Attributes:
        label: the name shown in tables and ``eval.json`` (``pgd20``, ``cw``).
        attack: the registered attack it builds (``pgd``, ``fgsm``, ``autoattack``).
        options: the options passed to the attack's factory.
        white_box: purely gradient-based (the gradient-masking checks compare
            these with black-box attacks).
    """

    label: str
    attack: str
    options: AttackOptions
    white_box: bool = True

    def build(self, *, autocast_dtype: torch.dtype | None = None) -> BudgetedAttack:
        """The attack object; ``autocast_dtype`` is passed only when given (plugins may not take it)."""
        kwargs = {} if autocast_dtype is None else {"autocast_dtype": autocast_dtype}
        attack = ATTACKS.build(self.attack, self.options, **kwargs)
        if not isinstance(attack, BudgetedAttack):
            raise AttackSpecError(f"attack {self.attack!r} does not satisfy the BudgetedAttack protocol")
        return attack

    def settings(self, attack: object | None = None) -> dict[str, Any]:
        """The settings to report: the options that apply, plus the attack's own ``settings()``."""
        out: dict[str, Any] = {"attack": self.attack, "norm": self.options.norm}
        if self.attack == "pgd":
            alpha = self.options.alpha
            out |= {
                "steps": self.options.steps,
                "alpha": alpha,
                "alpha_text": (
                    f"{STEP_SCALE:g} * eps / {self.options.steps}" if alpha is None
                    else format_eps(alpha, self.options.norm)
                ),
                "random_start": self.options.random_start,
                "loss": self.options.loss,
            }
        elif self.attack == "fgsm":
            out |= {"loss": self.options.loss}
        if isinstance(attack, ReportsSettings):
            out |= attack.settings()
        out.setdefault("implementation", self.implementation())
        return out

    def implementation(self) -> str:
        """The code that runs this attack: ``ades==<version>`` for the built-ins, ``dist==version`` for a
        plugin (an attack's own ``settings()["implementation"]`` takes precedence)."""
        source = ATTACKS.entry(self.attack).source
        return f"ades=={_ades_version()}" if source == "ades" else source

    def with_alpha(self, alpha: float) -> AttackSpec:
        """The same attack with another PGD step size."""
        return attrs.evolve(self, options=attrs.evolve(self.options, alpha=alpha))


_NORM_DEFAULT = object()


def pgd_spec(
    steps: int, *, loss: str = "ce", label: str | None = None, alpha: float | None | object = _NORM_DEFAULT,
    norm: str = "linf",
) -> AttackSpec:
    """PGD in ``norm`` with ``steps`` steps of ``alpha``, random start, maximising ``loss``; ``keep_broken``:
    a sample that any iterate misclassified counts as broken (its settings say so).

    ``alpha`` unset: :data:`DEFAULT_ALPHA` (2/255) for L-inf, ``None`` for L2
    (``2.5 * eps / steps``, so PGD-20 at eps 0.5 steps 0.0625 and can cross
    its ball two and a half times).
    """
    if alpha is _NORM_DEFAULT:
        alpha = DEFAULT_ALPHA if norm == "linf" else None
    options = AttackOptions(
        norm=norm, name="pgd", steps=steps, alpha=alpha, random_start=True, loss=loss, keep_broken=True
    )
    return AttackSpec(label=label or f"pgd{steps}", attack="pgd", options=options)


PRESET_NAMES: tuple[str, ...] = (
    "pgd20", "pgd100", "cw", "fgsm", "autoattack", "autoattack-rand", "autoattack-plus", "autoattack-torchattacks",
    "square",
)
"""The names ``ades eval --attack`` documents (``pgdN`` and ``cwN`` work for any N)."""


def known_attack_names() -> list[str]:
    """Every name :func:`resolve_attack` accepts, besides the ``pgdN`` / ``cwN`` patterns."""
    return sorted(set(PRESET_NAMES) | set(ATTACKS.names()))


def supported_norms(attack: str) -> tuple[str, ...]:
    """The norms registered attack ``attack`` supports (its ``AttackInfo.norms``; L-inf only by default)."""
    return ATTACKS.entry(attack).info.norms


def resolve_attack(name: str, norm: str = "linf") -> AttackSpec:
    """The :class:`AttackSpec` for an evaluation attack name in ``norm`` (``linf`` or ``l2``).

    Raises:
        RegistryError: an unknown name or norm; the message lists the known ones.
        AttackSpecError: the attack does not support ``norm`` (one line naming the norms it does),
            or ``pgd0``.
    """
    NORMS.get(norm)
    name = name.strip().lower()
    if name == "cw":
        return pgd_spec(20, loss="cw", label="cw", norm=norm)
    if match := _CW.match(name):
        return pgd_spec(int(match.group(1)), loss="cw", label=name, norm=norm)
    if match := _PGD.match(name):
        steps = int(match.group(1))
        if steps < 1:
            raise AttackSpecError(f"attack {name!r}: PGD needs at least one step")
        return pgd_spec(steps, norm=norm)
    if name in ATTACKS:
        if norm not in supported_norms(name):
            raise AttackSpecError(
                f"attack {name!r} supports norm(s) {', '.join(supported_norms(name))}, not {norm}; "
                f"attacks with {norm}: "
                + ", ".join(n for n in ATTACKS.names() if norm in supported_norms(n))
            )
        return AttackSpec(
            label=name,
            attack=name,
            options=AttackOptions(norm=norm, name=name),
            white_box=name not in GRADIENT_FREE,
        )
    raise RegistryError(
        f"unknown attack {name!r}; known: {', '.join(known_attack_names())} "
        "(and pgdN / cwN for N steps)"
    )


def resolve_attacks(names: tuple[str, ...] | list[str], norm: str = "linf") -> list[AttackSpec]:
    """Resolve several names in ``norm``; repeated labels are an error."""
    specs = [resolve_attack(n, norm) for n in names]
    labels = [s.label for s in specs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise AttackSpecError(f"attack(s) given more than once: {', '.join(repeated)}")
    return specs
