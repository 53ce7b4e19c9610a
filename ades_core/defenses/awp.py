"""Adversarial weight perturbation (AWP; Wu, Xia, Wang, NeurIPS 2020).

"Adversarial Weight Perturbation Helps Robust Generalization": after the
inputs are attacked, the weights are attacked too. One gradient-ascent step
of the adversarial training loss w.r.t. the weights gives, per weight layer
``l`` (parameters with more than one dimension: conv and linear weights; biases
and BatchNorm's affine parameters are left alone, as in the authors' code),

    v_l = gamma * ||w_l|| * g_l / ||g_l||,   g_l = dL(w; x_adv) / dw_l

(Frobenius norms over the whole tensor), so ``||v_l|| = gamma * ||w_l||``. The
model's gradient is then taken at ``w + v`` and, after the optimiser stepped
``w + v -> w + v - lr * grad``, ``v`` is subtracted again: the update is
``w -> w - lr * dL(w + v)/dw``.

The ascent runs on a proxy copy of the model, so that its forward in train mode
does not move the model's BatchNorm statistics (the authors' design). The proxy
is made once per model and refreshed from the model's ``state_dict`` every
step; it lives on the model's device and is not part of any state dict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ades_core.batch_reduction import LOCAL, BatchReduction

_COMPILED_PASSES = ("forward", "forward_features", "forward_head")
"""Instance attributes :func:`ades_core.builder.compile_model` may set; the proxy runs uncompiled."""


def perturbed_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs AWP perturbs: trainable parameters with ``ndim > 1``."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]


class AppliedPerturbation:
    """A weight perturbation ``v`` that has been added to ``weights``; :meth:`restore` removes it.

    Attributes:
        weights: the model's perturbed parameters.
        offsets: ``v``, one tensor per weight, same shapes and devices.
    """

    def __init__(self, weights: list[nn.Parameter], offsets: list[Tensor]) -> None:
        self.weights = weights
        self.offsets = offsets
        self.restored = False

    def restore(self) -> None:
        """Subtract ``v`` from the weights (once; later calls do nothing)."""
        if self.restored:
            return
        with torch.no_grad():
            torch._foreach_sub_(self.weights, self.offsets)
        self.restored = True


class WeightPerturbation:
    """AWP's adversary: computes ``v`` on a proxy and adds it to the model.

    Args:
        gamma: relative size ``||v_l|| / ||w_l||`` of every layer's perturbation
            (5e-3 in the authors' TRADES-AWP, 1e-2 in their AT-AWP on CIFAR-10).
        warmup_epochs: epochs (0-based ``epoch < warmup_epochs``) trained without AWP.
        reduction: the batch's reduction; under ``torchrun`` (the global batch) the
            ascent gradient is averaged over the ranks.
    """

    def __init__(self, gamma: float, warmup_epochs: int = 0, *, reduction: BatchReduction = LOCAL) -> None:
        if not gamma > 0:
            raise ValueError(f"AWP gamma must be positive, got {gamma}")
        if warmup_epochs < 0:
            raise ValueError(f"AWP warm-up must be >= 0 epochs, got {warmup_epochs}")
        self.gamma = float(gamma)
        self.warmup_epochs = int(warmup_epochs)
        self.active = self.warmup_epochs == 0
        self.reduction = reduction
        self._proxy: nn.Module | None = None
        self._source: int | None = None  # id() of the model the proxy copies

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """AWP is on from 0-based epoch ``warmup_epochs`` on."""
        self.active = epoch >= self.warmup_epochs

    def _proxy_for(self, model: nn.Module) -> nn.Module:
        """The persistent proxy of ``model`` with its current parameters, buffers and modes."""
        if self._proxy is None or self._source != id(model):
            compiled = {k: model.__dict__.pop(k) for k in _COMPILED_PASSES if k in model.__dict__}
            try:
                self._proxy = copy.deepcopy(model)
            finally:
                model.__dict__.update(compiled)
            self._source = id(model)
        proxy = self._proxy
        proxy.load_state_dict(model.state_dict())
        for source, copied in zip(model.modules(), proxy.modules()):
            copied.training = source.training
        return proxy

    def perturb(self, model: nn.Module, loss_of: Callable[[nn.Module], Tensor]) -> AppliedPerturbation:
        """Add ``v`` to ``model``'s weights and return it, to be restored after the update.

        Args:
            model: the classifier (unwrapped from DDP); its weights are changed in place.
            loss_of: ``net -> scalar`` training loss of ``net`` on the batch (the
                inputs already attacked); called once, on the proxy.

        Under ``torchrun`` (a rank reduction) the ascent gradient is averaged over
        ranks, so ``v`` is the whole global batch's, as in one process, and the
        same on every rank.
        """
        proxy = self._proxy_for(model)
        names = [n for n, _ in perturbed_weights(model)]
        proxy_params = dict(proxy.named_parameters())
        ascent = [proxy_params[n] for n in names]
        for p in ascent:
            p.grad = None
        with torch.enable_grad():
            loss_of(proxy).backward(inputs=ascent)
        self.reduction.average_gradients(ascent)
        weights = [p for _, p in perturbed_weights(model)]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ascent]
        with torch.no_grad():
            weight_norms = torch._foreach_norm(weights)
            grad_norms = torch._foreach_norm(grads)
            offsets = [
                g * (self.gamma * w_norm / (g_norm + 1e-20))
                for g, w_norm, g_norm in zip(grads, weight_norms, grad_norms)
            ]
            torch._foreach_add_(weights, offsets)
        for p in ascent:
            p.grad = None
        return AppliedPerturbation(weights, offsets)
