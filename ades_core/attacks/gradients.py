"""The input gradient an attack follows, with the fp32 answer's direction in every precision.

Under fp16 autocast the gradient of a confident sample underflows: the loss
is computed in float32 (the registered losses call ``logits.float()``), but
its gradient with respect to the logits, ``softmax - onehot``, is cast back
to float16 on its way into the network, and a value below 6e-8 becomes 0. No
loss scaling protects this path (a ``GradScaler`` scales parameter gradients
of the training loss, not an attack's input gradient), so the attack takes no
step on the very samples that look most robust.

:func:`loss_input_gradient` computes ``dL/dlogits`` in float32 on detached
logits, multiplies each row by a power of two that brings its largest entry
into [0.5, 1), and backpropagates that through the network. A power of two
scales exactly, and one positive factor per sample changes neither the sign
nor the direction of that sample's input gradient, because in eval mode every
sample's logits depend on its own input only. The gradient is therefore a
positive multiple of the true one (its size is not): fine for sign steps and
for zero / non-finite tests, not for methods that need its magnitude.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ades_core.model_mode import autocast_for


def loss_input_gradient(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    *,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """``(grad, logits)``: the gradient of ``loss_fn(model(x), target).sum()`` w.r.t. ``x``.

    Args:
        model: a classifier, already in the mode the caller wants (eval for
            attacks: samples must be independent for the per-sample rescaling).
        x: inputs ``(B, C, H, W)``, float; a fresh leaf is made from them.
        target: the loss's second argument (labels ``(B,)``, or probabilities ``(B, K)``).
        loss_fn: ``(logits (B, K), target) -> (B,)``, one value per sample.
        autocast_dtype: the forward pass runs under autocast to this dtype; ``None``:
            plain float32, and the gradient is exactly the loss's gradient.

    Returns:
        ``grad`` ``(B, C, H, W)`` in ``x``'s dtype: the exact gradient without
        autocast; under autocast, each sample's gradient times a positive power
        of two (the same sign and direction as the float32 answer, up to the
        rounding of the backward pass). ``logits`` ``(B, K)``: float32, detached.
        No host-device synchronisation.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast_for(x, autocast_dtype):
            logits = model(x)
        if autocast_dtype is None:
            (grad,) = torch.autograd.grad(loss_fn(logits, target).sum(), x)
            return grad, logits.detach().float()
        logits32 = logits.detach().float().requires_grad_(True)
        (upstream,) = torch.autograd.grad(loss_fn(logits32, target).sum(), logits32)
        upstream = upstream * row_power_of_two(upstream)
        (grad,) = torch.autograd.grad(logits, x, grad_outputs=upstream.to(logits.dtype))
    return grad, logits32.detach()


def row_power_of_two(values: Tensor) -> Tensor:
    """``(B, 1)`` float32 powers of two that bring each row's largest ``|value|`` into [0.5, 1).

    Rows that are all zero or not finite get 1 (nothing to rescale); the factor is at most
    2^126, so a row of float32 subnormals ends up below 0.5 rather than overflowing.
    """
    peak = values.detach().float().abs().amax(dim=1, keepdim=True)
    usable = torch.isfinite(peak) & (peak > 0)
    exponent = torch.frexp(torch.where(usable, peak, torch.ones_like(peak))).exponent
    exponent = torch.where(usable, exponent, torch.zeros_like(exponent)).clamp(-126, 126)  # 2^126 < float32 max
    return torch.ldexp(torch.ones_like(peak), -exponent)
