"""Running training statistics kept on the device, read once per log interval."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ades_core.distributed import DistributedContext
from ades_core.protocols import StepOutput

_FIELDS = (
    "n",
    "loss_sum",
    "clean_correct",
    "adv_correct",
    "eps_sum",
    "eps_sq_sum",
    "sigma_sum",
    "sigma_n",
    "clean_n",
    "nonfinite_steps",
)


class EpochStats:
    """Sums over the batches of one epoch, as one float64 device tensor.

    ``update`` queues device ops only; ``read`` synchronises once and returns
    plain floats: loss, accuracies in [0, 1] (the clean one ``None`` when the
    defense reported no clean logits, as Free-AT), eps mean/std/min/max in [0, 1]
    pixel scale, mean sigma (NaN when the budget has no sigma), and the count
    and first step number (1-based) of the steps whose loss or gradient was
    not finite. Those steps add nothing to the other sums.

    ``state_dict`` / ``load_state_dict`` carry the sums of an unfinished epoch
    across a resume, so its metrics come out as if it had not been interrupted.

    Under ``torchrun`` the sums stay per rank; ``read`` and
    ``global_state_dict`` reduce them over all ranks (one SUM and one MIN
    all-reduce), so every rank reports the same metrics of the global batches.
    Every rank must call them at the same steps. ``dist``: the run's context
    (``None`` on one process).
    """

    def __init__(self, device: torch.device, dist: DistributedContext | None = None) -> None:
        self.dist = dist
        self.sums = torch.zeros(len(_FIELDS), dtype=torch.float64, device=device)
        self.eps_min = torch.full((), math.inf, dtype=torch.float64, device=device)
        self.eps_max = torch.full((), -math.inf, dtype=torch.float64, device=device)
        self.first_nonfinite = torch.full((), math.inf, dtype=torch.float64, device=device)

    def update(self, out: StepOutput, y: Tensor, finite: Tensor | None = None, step: int = 0) -> None:
        """Add one step.

        Args:
            out: the defense's step output.
            y: ``(B,)`` labels.
            finite: 0-d bool device tensor, False when the step's loss or
                gradient was NaN/Inf (then only the non-finite count moves);
                ``None`` counts the step as finite.
            step: the step's 1-based number within the epoch.
        """
        eps = out.budget.eps.double()
        sigma = out.budget.sigma
        clean = (
            (out.logits_clean.argmax(1) == y).sum()
            if out.logits_clean is not None
            else y.new_zeros(())
        )
        batch = torch.stack(
            [
                eps.new_full((), float(y.shape[0])),
                out.loss.detach().double() * y.shape[0],
                clean.double(),
                (out.logits_adv.argmax(1) == y).sum().double(),
                eps.sum(),
                (eps * eps).sum(),
                sigma.double().sum() if sigma is not None else eps.new_zeros(()),
                eps.new_full((), float(sigma.numel())) if sigma is not None else eps.new_zeros(()),
                eps.new_full((), float(y.shape[0] if out.logits_clean is not None else 0)),
            ]
        )
        if finite is None:
            self.sums[:-1] += batch
            torch.minimum(self.eps_min, eps.min(), out=self.eps_min)
            torch.maximum(self.eps_max, eps.max(), out=self.eps_max)
            return
        self.sums += torch.cat([torch.where(finite, batch, 0.0), (~finite).double()[None]])
        torch.minimum(self.eps_min, torch.where(finite, eps.min(), math.inf), out=self.eps_min)
        torch.maximum(self.eps_max, torch.where(finite, eps.max(), -math.inf), out=self.eps_max)
        torch.minimum(
            self.first_nonfinite, torch.where(finite, math.inf, float(step)), out=self.first_nonfinite
        )

    def global_state_dict(self) -> dict[str, Tensor]:
        """:meth:`state_dict` summed (min/max for the extremes) over all ranks; the local one alone."""
        ctx = self.dist
        if ctx is None:
            return self.state_dict()
        extremes = torch.stack([self.eps_min, -self.eps_max, self.first_nonfinite])
        sums, extremes = ctx.all_reduce(self.sums, "sum"), ctx.all_reduce(extremes, "min")
        return {"sums": sums, "eps_min": extremes[0], "eps_max": -extremes[1], "first_nonfinite": extremes[2]}

    def read(self) -> dict[str, float]:
        state = self.global_state_dict()
        values = torch.cat(
            [state["sums"], state["eps_min"][None], state["eps_max"][None], state["first_nonfinite"][None]]
        ).tolist()
        named = dict(zip(_FIELDS, values[: len(_FIELDS)]))
        n = max(named["n"], 1.0)
        eps_mean = named["eps_sum"] / n
        variance = max(named["eps_sq_sum"] / n - eps_mean**2, 0.0)
        first_bad = values[-1]
        return {
            "samples": int(named["n"]),
            "train_loss": named["loss_sum"] / n,
            "train_clean_acc": named["clean_correct"] / named["clean_n"] if named["clean_n"] else None,
            "train_adv_acc": named["adv_correct"] / n,
            "eps_mean": eps_mean,
            "eps_std": math.sqrt(variance),
            "eps_min": values[-3],
            "eps_max": values[-2],
            "sigma_mean": named["sigma_sum"] / named["sigma_n"] if named["sigma_n"] else math.nan,
            "nonfinite_steps": int(named["nonfinite_steps"]),
            "first_nonfinite_step": None if math.isinf(first_bad) else int(first_bad),
        }

    def state_dict(self) -> dict[str, Tensor]:
        """The running sums (float64 tensors on the device)."""
        return {
            "sums": self.sums,
            "eps_min": self.eps_min,
            "eps_max": self.eps_max,
            "first_nonfinite": self.first_nonfinite,
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue from sums written by :meth:`state_dict` (any device)."""
        for name, target in self.state_dict().items():
            source = state[name]
            if source.shape != target.shape:
                raise ValueError(
                    f"epoch statistics {name!r} has shape {tuple(source.shape)}, "
                    f"expected {tuple(target.shape)}"
                )
            target.copy_(source)
