"""The run's data, model, budgets, optimiser and per-epoch held-out check: config sections.

Budgets are radii in the run's norm (``attack.norm``): L-inf in [0, 1] pixel
scale (``"8/255"`` or ``0.0314``), L2 a Euclidean radius; a section checks
that a budget is a number >= 0, the run its range for the norm
(:func:`ades_core.config.rules.check_budgets`).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from ades_core.cli_metadata import cli
from ades_core.config_fields import (
    EPS_FIELD,
    OPTIONAL_EPS_FIELD,
    ConfigError,
    UnknownNameError,
    _boolean,
    _float_tuple,
    _int_at_least,
    _named,
    _number_in,
    _path,
    _positive_or_none,
    _registered,
)
from ades_core.registries import DATASETS, LR_SCHEDULES
from ades_core.registry import RegistryError

@attrs.frozen(kw_only=True)
class DataConfig:
    """Which data, how much of it, in which batches."""

    dataset: str = attrs.field(
        default="cifar10",
        validator=_registered(DATASETS),
        metadata=cli("cifar10, cifar100 or imagefolder."),
    )
    data_dir: Path = attrs.field(
        default=Path("~/.cache/ades/data"),
        converter=_named(_path),
        metadata=cli("Dataset root (imagefolder: holds train/ and test/).", kind="path"),
    )
    train_subset: int | None = attrs.field(
        default=None,
        validator=_positive_or_none,
        metadata=cli("Train on this many random training images."),
    )
    test_subset: int | None = attrs.field(
        default=None,
        validator=_positive_or_none,
        metadata=cli("Evaluate on this many random test images."),
    )
    batch_size: int = attrs.field(
        default=128,
        validator=_int_at_least(1),
        metadata=cli("Training batch size."),
    )
    augment: bool = attrs.field(
        default=True,
        validator=_boolean,
        metadata=cli("Random crop (padding 4) and horizontal flip."),
    )
    download: bool = attrs.field(
        default=True,
        validator=_boolean,
        metadata=cli("Download CIFAR through torchvision when missing."),
    )
    image_size: int | None = attrs.field(
        default=None,
        validator=_positive_or_none,
        metadata=cli("Resize image-folder images to this square size."),
    )


@attrs.frozen(kw_only=True)
class ModelConfig:
    """The classifier: a timm model name (``ades_*`` or any timm model)."""

    backbone: str = attrs.field(
        default="ades_wrn34_10",
        metadata=cli("ades_* or any timm model name, e.g. ades_wrn34_10, ades_cnn_small."),
    )
    drop_rate: float = attrs.field(
        default=0.0,
        validator=_number_in(0.0, 1.0, high_open=True),
        metadata=cli("Dropout rate passed to the backbone."),
    )

    @backbone.validator
    def _known(self, attribute: attrs.Attribute, value: str) -> None:
        from ades_core.backbones.factory import check_backbone_name

        try:
            check_backbone_name(value)
        except RegistryError as exc:
            raise UnknownNameError(attribute.name, str(exc)) from None


@attrs.frozen(kw_only=True)
class BudgetConfig:
    """Budgets in the run's norm (``attack.norm``): L-inf in [0, 1] pixel scale, L2 a Euclidean radius.

    ``eps`` is the fixed budget of fixed-budget defenses (pgd-at); adaptive
    defenses use ``eps_x = eps_min + lam * sigma(x)`` in ``[eps_min, eps_min + lam]``.
    The defaults are L-inf's (8/255, 4/255, 8/255); the run checks each
    budget's range for its norm (:meth:`RunConfig.check_budgets`).
    """

    eps: float = attrs.field(
        default=8 / 255,
        converter=EPS_FIELD,
        metadata=cli("Fixed budget of pgd-at, e.g. 8/255 or 0.0314 (L-inf), 0.5 (L2).", kind="eps"),
    )
    eps_min: float = attrs.field(
        default=4 / 255,
        converter=EPS_FIELD,
        metadata=cli("Smallest adaptive budget: eps_x = eps_min + lam * sigma(x).", kind="eps"),
    )
    lam: float = attrs.field(
        default=8 / 255,
        converter=EPS_FIELD,
        metadata=cli("Range of the adaptive budget (lambda), e.g. 8/255.", kind="lam"),
    )

    @property
    def eps_max(self) -> float:
        return self.eps_min + self.lam



DEFAULT_EVAL_EPS = {"linf": 8 / 255, "l2": 0.5}
"""The evaluation budget of each norm when none is given: the RobustBench CIFAR-10 leaderboards'."""




@attrs.frozen(kw_only=True)
class OptimConfig:
    """SGD on the model and its learning-rate schedule.

    ``schedule``: a name in :data:`~ades_core.registries.LR_SCHEDULES`:
    ``multistep`` (``lr`` decayed by ``gamma`` at the ``milestones``, fractions
    of the epochs, stepped per epoch), ``cosine`` (from ``lr`` to 0, stepped
    per iteration), ``one-cycle`` (OneCycleLR, linear from ``lr / 1e4`` up to ``lr``
    over the first ``warmup`` of the iterations and back down, stepped per
    iteration), ``cyclic`` (one triangle from 0 up to ``lr`` at ``warmup`` of the
    iterations and back to 0, stepped per iteration: Wong et al.'s cyclic rate).
    """

    epochs: int = attrs.field(default=100, validator=_int_at_least(1), metadata=cli("Training epochs."))
    lr: float = attrs.field(
        default=0.1,
        validator=_number_in(0.0, low_open=True),
        metadata=cli("SGD learning rate (the peak of cosine, one-cycle and cyclic schedules)."),
    )
    momentum: float = attrs.field(
        default=0.9,
        validator=_number_in(0.0, 1.0, high_open=True),
        metadata=cli("SGD momentum."),
    )
    weight_decay: float = attrs.field(
        default=5e-4,
        validator=_number_in(0.0),
        metadata=cli("SGD weight decay."),
    )
    milestones: tuple[float, ...] = attrs.field(default=(0.75, 0.9), converter=_named(_float_tuple))
    gamma: float = attrs.field(default=0.1, validator=_number_in(0.0, 1.0, low_open=True))
    schedule: str = attrs.field(
        default="multistep",
        validator=_registered(LR_SCHEDULES),
        metadata=cli(
            "multistep (x0.1 at 75% and 90% of the epochs, per epoch), cosine, one-cycle or cyclic (per iteration).",
            name="lr-schedule",
        ),
    )
    warmup: float = attrs.field(
        default=0.5,
        validator=_number_in(0.0, 1.0, low_open=True, high_open=True),
        metadata=cli(
            "one-cycle, cyclic: the fraction of the iterations over which the rate rises.",
            name="lr-warmup",
        ),
    )

    @milestones.validator
    def _fractions(self, attribute: attrs.Attribute, value: tuple[float, ...]) -> None:
        if any(not 0.0 < m <= 1.0 for m in value) or list(value) != sorted(value):
            raise ConfigError(
                attribute.name, f"milestones must be increasing fractions in (0, 1], got {value}"
            )

    def milestone_epochs(self) -> list[int]:
        """Epochs (0-based, the LR drops at their start): 75 and 90 for 100 epochs."""
        return [round(m * self.epochs) for m in self.milestones]


@attrs.frozen(kw_only=True)
class EvalConfig:
    """The per-epoch held-out check: clean and PGD-``steps`` accuracy at ``eps`` (the run's norm).

    ``eps`` unset (``None``): the norm's usual budget, 8/255 for L-inf, 0.5
    for L2 (:data:`DEFAULT_EVAL_EPS`). ``alpha``: the PGD step; unset: the
    norm's default, 2/255 for L-inf, ``2.5 * eps / steps`` for L2
    (:func:`default_alpha`). The builder records the resolved values
    (:meth:`RunConfig.with_resolved_defaults`).
    """

    eps: float | None = attrs.field(
        default=None,
        converter=OPTIONAL_EPS_FIELD,
        metadata=cli(
            "Budget of the per-epoch held-out PGD check, in --norm (default: 8/255 for linf, 0.5 for l2).",
            name="eval-eps",
            kind="eps",
        ),
    )
    steps: int = attrs.field(
        default=20,
        validator=_int_at_least(1),
        metadata=cli("Steps of the per-epoch held-out PGD check.", name="eval-steps"),
    )
    alpha: float | None = attrs.field(default=None, converter=OPTIONAL_EPS_FIELD)
    batch_size: int = attrs.field(
        default=256,
        validator=_int_at_least(1),
        metadata=cli("Batch size of the held-out check.", name="eval-batch-size"),
    )
    every: int = attrs.field(
        default=1,
        validator=_int_at_least(1),
        metadata=cli("Evaluate every N epochs (and always after the last).", name="eval-every"),
    )


