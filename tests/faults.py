"""Faults injected into a training step: a value whose gradient is NaN."""

from __future__ import annotations

import torch


class NaNGradient(torch.autograd.Function):
    """Identity forward; NaN backward: a finite value whose gradient is not finite.

    ``NaNGradient.apply(t)`` equals ``t``; anything that backpropagates through it gets NaN.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")
