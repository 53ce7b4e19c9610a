"""Held-out accuracy, clean and under attack, without touching the model."""

from __future__ import annotations

import time

import attrs
import torch
from torch import nn

from ades_core.data import DeviceLoader, ImageTensors
from ades_core.model_mode import autocast_for, eval_mode
from ades_core.protocols import BudgetedAttack


@attrs.frozen
class AccuracyReport:
    """Accuracies in [0, 1] on ``n`` samples at budget ``eps`` ([0, 1] pixel scale).

    ``robust_acc`` counts a sample as robust only when it is classified
    correctly both clean and after the attack (a misclassified clean input is
    never counted robust, even if the attack's random start lands on the right
    class).
    """

    n: int
    clean_acc: float
    robust_acc: float
    eps: float
    seconds: float


def evaluate_robustness(
    model: nn.Module,
    data: ImageTensors,
    attack: BudgetedAttack,
    eps: float,
    *,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    seed: int = 0,
) -> AccuracyReport:
    """Clean and attacked accuracy of ``model`` on ``data`` (deterministic for ``seed``).

    The model is evaluated in eval mode (no BN statistic updates) and every
    submodule's mode is restored afterwards; its parameters are not changed.
    Counts stay on the device and are read once at the end.
    """
    start = time.perf_counter()
    loader = DeviceLoader(data, batch_size=batch_size, device=device, shuffle=False, augment=False)
    clean_correct = torch.zeros((), dtype=torch.long, device=device)
    robust_correct = torch.zeros((), dtype=torch.long, device=device)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        with eval_mode(model):
            for x, y, _ in loader:
                with torch.no_grad(), autocast_for(x, autocast_dtype):
                    clean_ok = model(x).argmax(dim=1) == y
                x_adv = attack(model, x, y, eps)
                with torch.no_grad(), autocast_for(x, autocast_dtype):
                    adv_ok = model(x_adv).argmax(dim=1) == y
                clean_correct += clean_ok.sum()
                robust_correct += (clean_ok & adv_ok).sum()
    n = len(data)
    clean, robust = torch.stack([clean_correct, robust_correct]).tolist()
    return AccuracyReport(
        n=n,
        clean_acc=clean / max(n, 1),
        robust_acc=robust / max(n, 1),
        eps=float(eps),
        seconds=time.perf_counter() - start,
    )
