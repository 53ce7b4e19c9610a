"""Running training statistics kept on the device, read once per log interval."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ades_core.protocols import StepOutput

_FIELDS = ("n", "loss_sum", "clean_correct", "adv_correct", "eps_sum", "eps_sq_sum", "sigma_sum", "sigma_n")


class EpochStats:
    """Sums over the batches of one epoch, as one float64 device tensor.

    ``update`` queues device ops only; ``read`` synchronises once and returns
    plain floats: loss, accuracies in [0, 1], eps mean/std/min/max in [0, 1]
    pixel scale, mean sigma (NaN when the budget has no sigma).
    """

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(_FIELDS), dtype=torch.float64, device=device)
        self.eps_min = torch.full((), math.inf, dtype=torch.float64, device=device)
        self.eps_max = torch.full((), -math.inf, dtype=torch.float64, device=device)

    def update(self, out: StepOutput, y: Tensor) -> None:
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
            ]
        )
        self.sums += batch
        torch.minimum(self.eps_min, eps.min(), out=self.eps_min)
        torch.maximum(self.eps_max, eps.max(), out=self.eps_max)

    def read(self) -> dict[str, float]:
        values = torch.cat([self.sums, self.eps_min[None], self.eps_max[None]]).tolist()
        named = dict(zip(_FIELDS, values[: len(_FIELDS)]))
        n = max(named["n"], 1.0)
        eps_mean = named["eps_sum"] / n
        variance = max(named["eps_sq_sum"] / n - eps_mean**2, 0.0)
        return {
            "samples": int(named["n"]),
            "train_loss": named["loss_sum"] / n,
            "train_clean_acc": named["clean_correct"] / n,
            "train_adv_acc": named["adv_correct"] / n,
            "eps_mean": eps_mean,
            "eps_std": math.sqrt(variance),
            "eps_min": values[-2],
            "eps_max": values[-1],
            "sigma_mean": named["sigma_sum"] / named["sigma_n"] if named["sigma_n"] else math.nan,
        }
