"""Zero-gradient masking is flagged, and a check that could not run is never shown as passed."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import ades_core.evaluation.masking as masking
from ades_core.data import ImageTensors
from ades_core.evaluation import evaluate, resolve_attacks
from ades_core.evaluation.masking import (
    CheckResult,
    MaskingCheckConfig,
    check_zero_gradients,
    run_masking_checks,
    summarise_checks,
    zero_gradient_samples,
)
from tests.evaluation.models import Linear, linear_data

CPU = torch.device("cpu")
EPS = 8 / 255


class ConvNet(nn.Module):
    """Conv-ReLU-pool-linear, 3 classes, optionally behind ``round(x * 255) / 255``."""

    def __init__(self, *, quantise: bool, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.quantise = quantise
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        if self.quantise:
            x = torch.round(x * 255) / 255  # zero gradient everywhere
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def _labelled_by(model: nn.Module, count: int = 24) -> ImageTensors:
    images = torch.randint(0, 256, (count, 3, 4, 4), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(dim=1)
    return ImageTensors(images, labels, ("a", "b", "c"))


def _flags(model: nn.Module, data: ImageTensors, dtype: torch.dtype | None = None) -> Tensor:
    return zero_gradient_samples(model, data, batch_size=10, device=CPU, autocast_dtype=dtype)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_every_sample_behind_an_input_quantiser_has_a_zero_gradient(dtype):
    conv = ConvNet(quantise=True).eval()
    assert _flags(conv, _labelled_by(conv), dtype).all()
    linear = Linear(48, 5, seed=5, quantise=True).eval()
    assert _flags(linear, linear_data(Linear(48, 5, seed=5), 24, (3, 4, 4)), dtype).all()


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_no_sample_of_a_differentiable_model_has_a_zero_gradient(dtype):
    conv = ConvNet(quantise=False).eval()
    assert not _flags(conv, _labelled_by(conv), dtype).any()
    linear = Linear(48, 5, seed=5).eval()
    assert not _flags(linear, linear_data(linear, 24, (3, 4, 4)), dtype).any()


def test_a_non_finite_gradient_counts_too():
    class Sqrt(nn.Module):
        def forward(self, x: Tensor) -> Tensor:  # d sqrt(t) / dt is inf at t = 0
            t = x.flatten(1)[:, :1]
            return torch.cat([t.sqrt(), 1 - t], dim=1)

    data = ImageTensors(torch.zeros(2, 1, 1, 1, dtype=torch.uint8), torch.ones(2, dtype=torch.long), ("a", "b"))
    assert _flags(Sqrt(), data).all()


def test_the_zero_gradient_rule():
    assert check_zero_gradients(0, 100).passed
    failed = check_zero_gradients(1, 100)
    assert failed.failed and "1 of 100" in failed.message and failed.details["fraction"] == pytest.approx(0.01)
    assert check_zero_gradients(5, 100, max_frac=0.05).passed and check_zero_gradients(6, 100, max_frac=0.05).failed


def test_only_the_zero_gradient_check_sees_a_quantised_cnn_when_square_cannot_run(monkeypatch):
    monkeypatch.setattr(masking, "pyautoattack_available", lambda: False)
    model = ConvNet(quantise=True).eval()
    data = _labelled_by(model)
    clean = torch.ones(len(data), dtype=torch.bool)
    config = MaskingCheckConfig(n=len(data), steps=5, more_steps=10)
    checks = {c.name: c for c in run_masking_checks(model, data, EPS, clean=clean, config=config, batch_size=24,
                                                   device=CPU)}
    assert checks["zero-gradients"].failed
    assert checks["eps-monotone"].passed and checks["more-steps"].passed
    black = checks["black-box"]
    assert black.status == "not-run" and not black.passed and not black.failed
    assert "pyautoattack" in black.message


def test_the_zero_gradient_check_stays_silent_on_the_same_cnn_without_the_quantiser(monkeypatch):
    monkeypatch.setattr(masking, "pyautoattack_available", lambda: False)
    model = ConvNet(quantise=False).eval()
    data = _labelled_by(model)
    clean = torch.ones(len(data), dtype=torch.bool)
    config = MaskingCheckConfig(n=len(data), steps=5, more_steps=10)
    checks = run_masking_checks(model, data, EPS, clean=clean, config=config, batch_size=24, device=CPU)
    assert checks[0].name == "zero-gradients" and checks[0].passed


def test_eval_json_carries_each_checks_status(monkeypatch):
    monkeypatch.setattr(masking, "pyautoattack_available", lambda: False)
    model = Linear(48, 5, seed=5, quantise=True).eval()
    data = linear_data(Linear(48, 5, seed=5), 24, (3, 4, 4))
    config = MaskingCheckConfig(n=24, steps=5, more_steps=10)
    report = evaluate(model, data, resolve_attacks(["pgd5"]), EPS, device=CPU, checks=config).to_dict()
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses["zero-gradients"] == "failed" and statuses["black-box"] == "not-run"
    assert all(c["passed"] == (c["status"] == "passed") for c in report["checks"])


def test_a_check_result_round_trips_and_reads_files_from_before_status():
    check = CheckResult(name="black-box", status="not-run", message="not run: ...", details={"needs": "x"})
    assert CheckResult.from_dict(check.to_dict()) == check
    legacy_skip = {"name": "black-box", "passed": True, "message": "skipped: ...", "details": {"skipped": True}}
    assert CheckResult.from_dict(legacy_skip).status == "not-run"
    legacy_fail = {"name": "large-eps", "passed": False, "message": "...", "details": {}}
    assert CheckResult.from_dict(legacy_fail).status == "failed"
    with pytest.raises(ValueError):
        CheckResult(name="x", status="skipped", message="")


def test_the_summary_names_checks_that_failed_or_did_not_run():
    checks = [CheckResult(name=n, status="passed", message="") for n in ("a", "b", "c", "d")]
    checks.append(CheckResult(name="black-box", status="not-run", message=""))
    assert summarise_checks(checks) == "4 passed, 1 not run (black-box)"
    checks.append(CheckResult(name="large-eps", status="failed", message=""))
    assert summarise_checks(checks) == "4 passed, 1 failed (large-eps), 1 not run (black-box)"
    assert summarise_checks([]) == "none run"
