"""Attacks step in the float32 direction under fp16 and bf16 autocast, even on confident samples."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ades_core.attacks import PGD
from ades_core.attacks.gradients import loss_input_gradient, row_power_of_two
from ades_core.attacks.losses import cross_entropy


class OverConfident(nn.Module):
    """Two classes, ``logits = 20 W (flatten(x) - 1/2)``: margins from 0 to tens of logits.

    With two classes the input gradient of the cross-entropy is ``(1 - p_y) (w_other - w_y)``:
    its sign does not depend on how confident the model is, only whether it is zero.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(12, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(2, 12, generator=generator))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return 20 * self.fc(x.flatten(1) - 0.5)


def _problem():
    model = OverConfident().eval()
    x = torch.rand(16, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(dim=1)
    return model, x, y, (logits.max(dim=1).values - logits.min(dim=1).values)


def _first_step(model, x, y, dtype):
    return PGD(steps=1, alpha=0.01, random_start=False, autocast_dtype=dtype)(model, x, y, 0.1) - x


def test_the_problem_has_samples_whose_fp16_gradient_underflows_but_not_in_float32():
    model, x, y, margins = _problem()
    assert (margins > 20).sum() >= 4 and (margins < 80).all()  # exp(-20) < 6e-8 (fp16), exp(-80) > 1e-38
    x32 = x.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(cross_entropy(model(x32), y).sum(), x32)
    assert (exact.flatten(1) != 0).all()
    # Plain autograd under fp16 autocast: dL/dlogits is cast to float16 and flushes to zero.
    x16 = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(x16)
    (underflow,) = torch.autograd.grad(cross_entropy(logits, y).sum(), x16)
    assert (underflow.flatten(1) == 0).all(dim=1).sum() >= 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pgd_under_autocast_takes_the_float32_step_on_every_sample(dtype):
    model, x, y, _ = _problem()
    exact = _first_step(model, x, y, None)
    assert (exact != 0).all()
    assert torch.equal(_first_step(model, x, y, dtype).sign(), exact.sign())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_autocast_gradient_is_a_positive_multiple_of_the_float32_one_per_sample(dtype):
    model, x, y, _ = _problem()
    exact, logits32 = loss_input_gradient(model, x, y, cross_entropy)
    scaled, logits = loss_input_gradient(model, x, y, cross_entropy, autocast_dtype=dtype)
    assert logits.dtype == torch.float32 and not logits.requires_grad
    exact, scaled = exact.flatten(1).double(), scaled.flatten(1).double()
    cosine = (exact * scaled).sum(dim=1) / (exact.norm(dim=1) * scaled.norm(dim=1))  # no eps: norms of 1e-20
    assert (cosine > 0.99).all()


def test_without_autocast_the_gradient_is_autograds_bit_for_bit():
    model, x, y, _ = _problem()
    grad, logits = loss_input_gradient(model, x, y, cross_entropy)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(cross_entropy(model(leaf), y).sum(), leaf)
    assert torch.equal(grad, expected)
    assert torch.equal(logits, model(x).detach())


def test_rows_are_rescaled_by_exact_powers_of_two():
    values = torch.tensor([[3e-20, -1e-20], [0.0, 0.0], [float("nan"), 1.0], [3.0, 1.0], [1e-42, 0.0]])
    scale = row_power_of_two(values).squeeze(1)
    assert torch.equal(torch.frexp(scale).mantissa, torch.full_like(scale, 0.5))  # powers of two
    peaks = (values * scale[:, None]).abs().amax(dim=1)
    assert ((peaks[[0, 3]] >= 0.5) & (peaks[[0, 3]] < 1)).all()
    assert scale[1] == 1 and scale[2] == 1  # nothing to rescale: all zero, not finite
    assert torch.isfinite(scale[4]) and 0 < peaks[4] < 1  # float32 subnormals: no overflow
