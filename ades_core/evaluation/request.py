"""What one evaluation is asked to do: :class:`EvalRequest`, checked when it is built.

``ades eval`` builds one request from its options and hands it to
:func:`~ades_core.evaluation.pipeline.prepare_evaluation`; a library caller
builds the same request in code. Every field is checked at construction
(an :class:`EvalRequestError` naming the field, what it got and what it
accepts); the checks that need the model (the budgets against the norm the
run trained in) run in :meth:`EvalRequest.budgets`, once the norm is known.

Budgets are in the evaluation's norm: L-inf in [0, 1] pixel scale (8/255),
L2 a Euclidean radius in pixel space (0.5).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs

from ades_core.config import DEFAULT_EVAL_EPS
from ades_core.errors import AdesError
from ades_core.evaluation.sources import EVAL_ORDERS, WEIGHT_FILES
from ades_core.model_mode import PRECISIONS
from ades_core.norms import NORMS

DEFAULT_ATTACKS: tuple[str, ...] = ("pgd20", "cw", "autoattack")
"""The attacks of ``ades eval`` when none are given."""


class EvalRequestError(AdesError, ValueError):
    """A request field of the wrong type or out of range; one line naming the field.

    Attributes:
        field: the request field (``"eps"``, ``"check_n"``); ``ades eval``'s
            option is ``--`` and the field with dashes (``--check-n``).
        reason: what is wrong and what is accepted.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_at_least(low: int, *, optional: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if optional and value is None:
            return
        if not _is_int(value) or value < low:
            unset = " or unset" if optional else ""
            raise EvalRequestError(attribute.name, f"must be an integer >= {low}{unset}, got {value!r}")

    return check


def _one_of(choices: Any, *, optional: bool = False) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if optional and value is None:
            return
        if value not in choices:
            raise EvalRequestError(attribute.name, f"{value!r} is not one of: {', '.join(choices)}")

    return check


def _budget(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _eps(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not _budget(value):
        raise EvalRequestError(attribute.name, f"must be a finite budget >= 0 or unset, got {value!r}")


def _sweep(instance: object, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
    if not all(_budget(eps) for eps in value):
        raise EvalRequestError(attribute.name, f"must hold finite budgets >= 0, got {value!r}")


def _names(instance: object, attribute: attrs.Attribute, value: tuple[Any, ...]) -> None:
    if not value or not all(isinstance(name, str) and name.strip() for name in value):
        raise EvalRequestError(attribute.name, f"must name at least one attack, each non-empty, got {value!r}")


def _optional_path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


def _str_tuple(value: Any) -> tuple[Any, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class ExternalModel:
    """A model ades did not train (``ades eval --arch``): what :func:`load_external_model` builds.

    Attributes:
        arch: a timm model name or ``package.module:factory``.
        weights: its ``.safetensors`` / ``.pt`` / ``.pth`` state_dict.
        num_classes: its number of classes, >= 1.
        mean, std: its per-channel input normalisation in [0, 1] pixel scale
            (numbers or their text, one per channel; checked when the model is
            built), or ``None`` for none.
    """

    arch: str = attrs.field(validator=attrs.validators.instance_of(str))
    weights: Path = attrs.field(converter=Path)
    num_classes: int = attrs.field(validator=_int_at_least(1))
    mean: tuple[Any, ...] | None = attrs.field(default=None, converter=_str_tuple)
    std: tuple[Any, ...] | None = attrs.field(default=None, converter=_str_tuple)


def _one_model(instance: EvalRequest, attribute: attrs.Attribute, value: ExternalModel | None) -> None:
    if value is not None and not isinstance(value, ExternalModel):
        raise EvalRequestError(attribute.name, f"must be an ExternalModel or unset, got {type(value).__name__}")
    if (instance.model is None) == (value is None):
        raise EvalRequestError(
            "model", "give exactly one of a run (folder or model file) and a model ades did not train (external)"
        )


@attrs.frozen(kw_only=True)
class EvalRequest:
    """One evaluation: which model, which test images, which attacks, what is written.

    Attributes:
        model: an ades run folder or model file; ``None`` with ``external``.
        weights: which of a run's weights, ``last``, ``best`` (``--val-split``)
            or ``ema`` (``--ema``).
        external: a model ades did not train; ``None`` for a run.
        attacks: evaluation attack names (``pgd20``, ``cw``, ``autoattack``, ...).
        norm: ``linf`` or ``l2``; ``None``: the norm the run trained in, else linf.
        eps: the budget in ``norm``; ``None``: the norm's default (8/255, 0.5).
        eps_sweep: budgets of the PGD-20 sweep (``()``: no sweep).
        n: test images (``None``: all); ``order``: ``random`` (drawn from
            ``seed``) or ``first``.
        seed: seed of the subset and of every attack's randomness, >= 0.
        batch_size: images per attacked batch, >= 1.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (under torchrun the rank's).
        dataset, data_dir, image_size: the test split (``None``: as the run recorded).
        checks: run the gradient-masking checks on ``check_n`` samples.
        out: the report file (``None``: ``eval.json`` beside the model).
        precision: ``fp32``, ``bf16`` or ``fp16`` forward passes.
        resume: continue from the state kept beside the report.
    """

    model: Path | None = attrs.field(default=None, converter=_optional_path)
    weights: str = attrs.field(default="last", validator=_one_of(tuple(WEIGHT_FILES)))
    external: ExternalModel | None = attrs.field(default=None, validator=_one_model)
    attacks: tuple[str, ...] = attrs.field(default=DEFAULT_ATTACKS, converter=tuple, validator=_names)
    norm: str | None = attrs.field(default=None, validator=_one_of(("linf", "l2"), optional=True))
    eps: float | None = attrs.field(default=None, validator=_eps)
    eps_sweep: tuple[float, ...] = attrs.field(default=(), converter=tuple, validator=_sweep)
    n: int | None = attrs.field(default=None, validator=_int_at_least(1, optional=True))
    order: str = attrs.field(default="random", validator=_one_of(EVAL_ORDERS))
    seed: int = attrs.field(default=0, validator=_int_at_least(0))
    batch_size: int = attrs.field(default=256, validator=_int_at_least(1))
    device: str = attrs.field(default="auto", validator=attrs.validators.instance_of(str))
    dataset: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    data_dir: Path | None = attrs.field(default=None, converter=_optional_path)
    image_size: int | None = attrs.field(default=None, validator=_int_at_least(1, optional=True))
    checks: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    check_n: int = attrs.field(default=200, validator=_int_at_least(1))
    out: Path | None = attrs.field(default=None, converter=_optional_path)
    precision: str = attrs.field(default="fp32", validator=_one_of(tuple(PRECISIONS)))
    resume: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def budgets(self, norm: str) -> tuple[float, tuple[float, ...]]:
        """``eps`` (``norm``'s default when unset) and ``eps_sweep``, each within ``norm``'s range.

        Raises:
            EvalRequestError: ``eps`` or ``eps_sweep``, naming the budget and the range.
        """
        threat = NORMS.get(norm)
        eps = DEFAULT_EVAL_EPS[norm] if self.eps is None else self.eps
        for field, values in (("eps", (eps,)), ("eps_sweep", self.eps_sweep)):
            for value in values:
                try:
                    threat.check_budget(value, threat.format(value))
                except ValueError as exc:
                    raise EvalRequestError(field, f"{exc} for --norm {norm}") from None
        return eps, self.eps_sweep


__all__ = ["DEFAULT_ATTACKS", "EvalRequest", "EvalRequestError", "ExternalModel"]
