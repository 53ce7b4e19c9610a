"""Choosing weights during a run: the validation check, the best checkpoint, the weight average, the early stop.

:class:`RunSelection` is what the trainer consults beside its loop:

* after every optimiser step, :meth:`~RunSelection.after_update` folds the
  weights into the exponential moving average (``--ema``;
  :mod:`ades_core.engine.ema`), on the device without a host read;
* at the end of an epoch on which the held-out check is due,
  :meth:`~RunSelection.end_epoch` measures clean and PGD accuracy on the
  validation split (``--val-split``; with the held-out check's attack, in eval
  mode, never augmented) for the trained weights and for the average, keeps
  the best epoch by robust validation accuracy (the first on a tie), and
  decides the early stop (``val.early_stop_drop``); the evaluation reads its
  counts once, as the test check does;
* :meth:`~RunSelection.save_files` writes ``model-best.safetensors`` when the
  epoch is the new best and ``model-ema.safetensors`` after every epoch.

Its :meth:`~RunSelection.state_dict` (the average, the best so far, the early
stop) is part of the training state, so a resumed run continues with all of it.
Accuracies are fractions in [0, 1]; epochs in records are 1-based.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ades_core.engine.runfolder.model_files import BEST_MODEL_FILE, EMA_MODEL_FILE, save_model
from ades_core.engine.ema import WeightAverage
from ades_core.engine.evaluator import AccuracyReport, evaluate_robustness
from ades_core.registries import ATTACKS

if TYPE_CHECKING:  # annotations only: setup.py imports the trainer, which imports this module
    from ades_core.engine.setup import TrainingSetup



def held_out_attack(config: Any, autocast_dtype: torch.dtype | None) -> Any:
    """The per-epoch held-out check's attack: PGD with the run's ``eval`` steps and step size.

    A held-out sample counts as broken if any PGD iterate broke it, as in ``ades eval``.
    """
    return ATTACKS.build(
        "pgd",
        config.attack.__class__(
            norm=config.norm, steps=config.eval.steps, alpha=config.eval.alpha, random_start=True, keep_broken=True
        ),
        autocast_dtype=autocast_dtype,
    )


def held_out_check(setup: Any, model: Any, data: Any, distributed: Any) -> Any:
    """The per-epoch held-out check of ``model`` on ``data`` (the test or the validation split):
    clean and ``eval`` PGD accuracy with the run's eval settings (:func:`evaluate_robustness`)."""
    cfg = setup.config.eval
    return evaluate_robustness(
        model, data, setup.eval_attack, cfg.eps, batch_size=cfg.batch_size, device=setup.device,
        autocast_dtype=setup.autocast_dtype, seed=setup.config.seed, distributed=distributed,
    )

class RunSelection:
    """The validation check, best checkpoint, EMA and early stop of one run (see the module docstring)."""

    def __init__(self, setup: TrainingSetup) -> None:
        self.setup = setup
        config = setup.config
        ema = config.ema
        self.ema = (
            WeightAverage(setup.model, ema.decay, warmup=ema.warmup, buffers=ema.buffers)
            if ema.decay is not None
            else None
        )
        self._ema_model: nn.Module | None = None
        self.early_stop_drop = config.val.early_stop_drop
        self.best_epoch: int | None = None
        self.best_acc: float | None = None
        self.stopped_epoch: int | None = None
        self._new_best = False

    @property
    def validates(self) -> bool:
        return self.setup.val_data is not None

    def after_update(self) -> None:
        """After an optimiser step: update the weight average (device ops only)."""
        if self.ema is not None:
            self.ema.update()

    def ema_model(self) -> nn.Module | None:
        """A model holding the current average (built once, then refreshed), or ``None`` without ``--ema``."""
        if self.ema is None:
            return None
        if self._ema_model is None:
            setup = self.setup
            self._ema_model = setup.model_spec.build().to(setup.device).to(memory_format=torch.channels_last)
            self._ema_model.eval()
        return self.ema.copy_into(self._ema_model)

    def _check(self, model: nn.Module) -> AccuracyReport:
        return held_out_check(self.setup, model, self.setup.val_data, self.setup.dist)

    def end_epoch(self, epoch: int, *, due: bool) -> dict[str, Any]:
        """The validation figures of 0-based ``epoch`` for its metrics record (``None`` when not
        measured), ``best_epoch`` (1-based, the best so far) and ``early_stop``."""
        self._new_best = False
        record: dict[str, Any] = {}
        if not self.validates:
            return record
        record |= {"val_clean_acc": None, "val_pgd_acc": None}
        if self.ema is not None:
            record |= {"val_ema_clean_acc": None, "val_ema_pgd_acc": None}
        if due:
            report = self._check(self.setup.model)
            record |= {"val_clean_acc": report.clean_acc, "val_pgd_acc": report.robust_acc, "val_n": report.n}
            if self.ema is not None:
                averaged = self._check(self.ema_model())
                record |= {"val_ema_clean_acc": averaged.clean_acc, "val_ema_pgd_acc": averaged.robust_acc}
            self._observe(epoch + 1, report.robust_acc)
        stop = self.stopped_epoch == epoch + 1
        return record | {"best_epoch": self.best_epoch, "best_val_pgd_acc": self.best_acc, "early_stop": stop}

    def _observe(self, epoch: int, robust_acc: float) -> None:
        if self.best_acc is None or robust_acc > self.best_acc:
            self.best_epoch, self.best_acc, self._new_best = epoch, robust_acc, True
        elif self.early_stop_drop is not None and self.best_acc - robust_acc > self.early_stop_drop:
            self.stopped_epoch = epoch

    def save_files(self, out: Path) -> None:
        """``model-best.safetensors`` when the last epoch was the new best; ``model-ema.safetensors``."""
        setup = self.setup
        config = setup.config.to_dict()
        if self._new_best:
            save_model(out / BEST_MODEL_FILE, setup.model, setup.model_spec, config)
        averaged = self.ema_model()
        if averaged is not None:
            save_model(out / EMA_MODEL_FILE, averaged, setup.model_spec, config)

    def describe_stop(self) -> str:
        return (
            f"stopped early after epoch {self.stopped_epoch}: validation PGD accuracy fell more than "
            f"{100 * self.early_stop_drop:.0f} points below its best ({100 * self.best_acc:.1f}% at epoch "
            f"{self.best_epoch}); model-best.safetensors holds that epoch's weights"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_acc": self.best_acc,
            "stopped_epoch": self.stopped_epoch,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_epoch, self.best_acc = state["best_epoch"], state["best_acc"]
        self.stopped_epoch = state["stopped_epoch"]
        if (state["ema"] is None) != (self.ema is None):
            raise ValueError("the saved state and this run disagree on whether weights are averaged (--ema)")
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


__all__ = ["RunSelection"]
