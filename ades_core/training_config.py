"""Config sections of how a run is trained and selected beyond the optimiser step.

* :class:`ValidationConfig` (``val``): training images held out for a
  validation split, the best checkpoint chosen on them, and an early stop.
* :class:`EmaConfig` (``ema``): an exponential moving average of the weights.
* :class:`LoggingConfig` (``logging``): optional writers beside ``metrics.jsonl``.

Each field is checked when its section is built, like every section of
:class:`~ades_core.config.RunConfig`; the rules across sections (an early
stop needs a validation split) run when the ``RunConfig`` is built.
"""

from __future__ import annotations

import attrs

from ades_core.cli_metadata import cli
from ades_core.config_fields import ConfigError, _boolean, _in_choices, _int_at_least, _is_number

EMA_BUFFER_MODES: tuple[str, ...] = ("average", "copy")
"""How the EMA model's BatchNorm running statistics follow the trained model's (see :class:`EmaConfig`)."""


def _fraction_or_none(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not (_is_number(value) and 0.0 < value <= 1.0):
        raise ConfigError(attribute.name, f"must be a fraction in (0, 1] (accuracy points: 0.2 = 20 points) or unset, got {value!r}")


@attrs.frozen(kw_only=True)
class ValidationConfig:
    """A validation split held out of the loaded training images.

    ``split``: this many of the loaded training images (after ``--train-subset``)
    are held out, drawn from the seed alone (the same images for every run
    with the same seed and data), never augmented and never trained on; 0
    holds none out. Every ``eval.every`` epochs (and after the last) their
    clean and PGD accuracy are measured with the held-out check's attack
    (``eval.eps``, ``eval.steps``), and ``model-best.safetensors`` keeps the
    weights of the epoch with the highest robust validation accuracy (the
    first such epoch on a tie).
    ``early_stop_drop``: stop training once the robust validation accuracy
    falls more than this (a fraction, 0.2 = 20 points) below the best so far:
    catastrophic overfitting (Wong et al.); ``model-best.safetensors`` then
    holds the weights before the collapse. Unset: never stop early.
    """

    split: int = attrs.field(
        default=0,
        validator=_int_at_least(0),
        metadata=cli(
            "Hold out N training images (fixed by --seed, never augmented); their clean and PGD accuracy every --eval-every epochs choose model-best.safetensors.",
            name="val-split",
        ),
    )
    early_stop_drop: float | None = attrs.field(
        default=None,
        validator=_fraction_or_none,
        metadata=cli(
            "Stop when the validation PGD accuracy falls more than this many accuracy points, as a fraction, below its best (0.2: 20 points, catastrophic overfitting); needs --val-split.",
        ),
    )


def _decay(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not (_is_number(value) and 0.0 < value < 1.0):
        raise ConfigError(attribute.name, f"must be a decay in (0, 1), e.g. 0.999, or unset for no average, got {value!r}")


@attrs.frozen(kw_only=True)
class EmaConfig:
    """An exponential moving average of the model's weights, updated after every optimiser step.

    ``decay``: the average's decay ``d`` in (0, 1); after update ``t`` (1-based),
    ``w_ema <- d_t * w_ema + (1 - d_t) * w``. Unset: no average.
    ``warmup``: ``d_t = min(d, (1 + t) / (10 + t))`` (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so the early average
    is not dominated by the initial weights; off: ``d_t = d`` from the start.
    ``buffers``: BatchNorm running statistics (float buffers) are ``average``d
    with the same ``d_t`` as the weights (as timm's ``ModelEmaV2`` and
    ``torch.optim.swa_utils.AveragedModel(use_buffers=True)``), or ``copy``ed
    from the trained model after each update; integer buffers
    (``num_batches_tracked``) are always copied.
    """

    decay: float | None = attrs.field(
        default=None,
        validator=_decay,
        metadata=cli(
            "Keep an exponential moving average of the weights with this decay, e.g. 0.999 (model-ema.safetensors).",
            name="ema",
        ),
    )
    warmup: bool = attrs.field(
        default=True,
        validator=_boolean,
        metadata=cli("EMA decay min(decay, (1+t)/(10+t)) at update t.", name="ema-warmup"),
    )
    buffers: str = attrs.field(
        default="average",
        validator=_in_choices(*EMA_BUFFER_MODES),
        metadata=cli(
            "EMA of BatchNorm running statistics: averaged like the weights, or copied.",
            name="ema-buffers",
            choices=EMA_BUFFER_MODES,
        ),
    )


@attrs.frozen(kw_only=True)
class LoggingConfig:
    """Writers beside ``metrics.jsonl``: ``tensorboard`` writes ``tensorboard/`` in the run folder
    (needs the ``tensorboard`` extra: ``pip install 'ades[tensorboard]'``)."""

    tensorboard: bool = attrs.field(
        default=False,
        validator=_boolean,
        metadata=cli("Also write TensorBoard events to RUN/tensorboard (pip install 'ades[tensorboard]')."),
    )


def check_training_rules(val: ValidationConfig, eval_every: int) -> None:
    """The rules across these sections and the others; raises :class:`ConfigError` naming the field."""
    if val.early_stop_drop is not None and val.split == 0:
        raise ConfigError(
            "val.early_stop_drop",
            "an early stop watches the validation split's PGD accuracy; hold some images out with --val-split N",
        )
    if val.early_stop_drop is not None and eval_every != 1:
        raise ConfigError(
            "val.early_stop_drop",
            f"an early stop needs the validation check every epoch (--eval-every 1), got --eval-every {eval_every}",
        )


__all__ = ["EMA_BUFFER_MODES", "EmaConfig", "LoggingConfig", "ValidationConfig", "check_training_rules"]
