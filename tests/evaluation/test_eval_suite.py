"""The suite: per-sample worst case, determinism, an untouched model, and the gradient-masking checks."""

from __future__ import annotations

import pytest
import torch

from ades_core.attacks import AutoAttack
from ades_core.config import AttackOptions
from ades_core.evaluation import AttackSpec, MaskingCheckConfig, evaluate, resolve_attacks
from ades_core.evaluation.masking import check_black_box, check_large_eps, check_monotone, check_more_steps, noise
from ades_core.registries import ATTACKS
from tests.evaluation.models import CodedModel, Linear, PooledNet, RewriteCode, coded_data, linear_data

CPU = torch.device("cpu")


@pytest.fixture
def registered():
    """Register test-only attacks for one test, then remove them."""
    names = []

    def register(name, factory):
        ATTACKS.register(name, factory)
        names.append(name)
        return AttackSpec(label=name, attack=name, options=AttackOptions(name="pgd"))

    yield register
    for name in names:
        ATTACKS.unregister(name)


def test_worst_case_counts_a_sample_only_if_it_survives_every_attack(registered):
    # labels 0..4 twice; the last sample is misclassified clean (its code says 1, its label 3)
    data = coded_data([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 3])
    data.images[-1, 0, 0, 0] = round(0.1 * 255)
    breaks_02 = registered("test-breaks-0-2", lambda options: RewriteCode({0, 2}))
    breaks_24 = registered("test-breaks-2-4", lambda options: RewriteCode({2, 4}))

    # the coded attacks move the code pixel by up to 0.4: a ball of 0.5 holds them
    result = evaluate(CodedModel(), data, [breaks_02, breaks_24], 0.5, device=CPU, checks=None)

    n = 11
    assert result.n == n and result.clean_acc == pytest.approx(10 / n)
    first, second = result.attacks
    assert first.robust_count == 6 and first.robust_acc == pytest.approx(6 / n)  # labels 1, 3, 4 x2
    assert second.robust_count == 6 and second.robust_acc == pytest.approx(6 / n)  # labels 0, 1, 3 x2
    assert result.worst_case.robust_count == 4  # labels 1, 3 x2; the clean-wrong 3 never counts
    assert result.worst_case.robust_acc <= min(first.robust_acc, second.robust_acc)
    assert result.worst_case.settings["attacks"] == ["test-breaks-0-2", "test-breaks-2-4"]


def _payload_without_times(result):
    payload = result.to_dict()
    payload.pop("seconds")
    for row in payload["attacks"] + payload["sweep"]["points"] + [payload["worst_case"]]:
        row.pop("seconds")
    return payload


def test_evaluation_is_deterministic_for_a_seed_and_leaves_the_model_untouched(registered):
    model = PooledNet(seed=1)
    model.train()
    model.bn.eval()  # mixed modes must come back exactly
    data = linear_data(Linear(48, 5, seed=0), 24, (3, 4, 4), seed=2)
    with torch.no_grad():  # label by the model so the attacks have work to do
        labels = model.eval()(data.images.float() / 255).argmax(dim=1)
    model.train()
    model.bn.eval()
    data = type(data)(data.images, labels, data.classes)
    modes = {name: m.training for name, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    specs = resolve_attacks(["pgd20", "fgsm"])
    specs.append(registered("test-cheap-aa", lambda options: AutoAttack(iterations=2, square_queries=10)))
    checks = MaskingCheckConfig(n=8, more_steps=25, square_queries=10)

    def run(seed):
        return evaluate(
            model, data, specs, 8 / 255, device=CPU, seed=seed, sweep=[4 / 255, 8 / 255], checks=checks, batch_size=10
        )

    first, again = run(0), run(0)

    assert _payload_without_times(first) == _payload_without_times(again)
    assert {name: m.training for name, m in model.named_modules()} == modes
    for key, value in model.state_dict().items():  # weights and BN running statistics
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert first.sweep[1] is first.attacks[0]  # the sweep reuses the identical PGD-20 run at 8/255


MASK_EPS = 20 / 255  # about 64% of these samples are exactly robust at this budget


def _linear_problem(quantise: bool):
    model = Linear(48, 5, seed=5, quantise=quantise).eval()
    data = linear_data(Linear(48, 5, seed=5), 96, (3, 4, 4), seed=6, low=64, high=192)
    return model, data


def test_masking_checks_fire_on_a_model_with_a_non_differentiable_input_layer():
    model, data = _linear_problem(quantise=True)
    result = evaluate(model, data, resolve_attacks(["pgd20"]), MASK_EPS, device=CPU, checks=MaskingCheckConfig(n=96))
    failed = {c.name for c in result.checks if not c.passed}
    assert {"black-box", "large-eps"} <= failed, [c.message for c in result.checks]
    assert result.warnings and all("%" in w for w in result.warnings)


def test_masking_checks_stay_silent_on_the_same_model_without_the_quantiser():
    model, data = _linear_problem(quantise=False)
    result = evaluate(model, data, resolve_attacks(["pgd20"]), MASK_EPS, device=CPU, checks=MaskingCheckConfig(n=96))
    assert all(c.passed for c in result.checks), [c.message for c in result.checks if not c.passed]
    assert [c.name for c in result.checks] == ["zero-gradients", "eps-monotone", "more-steps", "black-box", "large-eps"]


def test_check_rules_and_their_tolerance():
    assert noise(100, 0.5) == pytest.approx(0.1)
    assert noise(100, 0.0) == pytest.approx(0.01)  # never below one sample
    assert check_monotone([1, 2, 3], [0.5, 0.4, 0.1], 100).passed
    assert check_monotone([1, 2, 3], [0.5, 0.52, 0.1], 100).passed  # within noise
    rise = check_monotone([1 / 255, 2 / 255, 3 / 255], [0.2, 0.5, 0.1], 100)
    assert not rise.passed and "rises with eps" in rise.message and "2/255" in rise.message
    assert not check_more_steps(0.3, 0.5, 100, (20, 100)).passed
    assert "not converged" in check_more_steps(0.5, 0.2, 100, (20, 100)).message
    assert check_more_steps(0.3, 0.29, 100, (20, 100)).passed
    assert not check_black_box(0.1, 0.4, 100).passed and check_black_box(0.4, 0.35, 100).passed
    assert not check_large_eps(0.2, 64 / 255, 100, 0.05).passed and check_large_eps(0.01, 64 / 255, 100, 0.05).passed


class _Overshoot:
    """A broken attack: steps 2 eps away from x, outside its own ball."""

    def __call__(self, model, x, y, eps):
        return (x + 2 * eps).clamp(0, 1)


def test_an_attack_that_leaves_its_ball_is_refused_not_scored(registered):
    from ades_core.evaluation.runner import AttackContractError

    data = coded_data([0, 1, 2, 3, 4])
    data.images[:, 0, 0, 0] //= 2  # room below 1 for the overshoot to show
    spec = registered("test-overshoot", lambda options: _Overshoot())
    with pytest.raises(AttackContractError, match="test-overshoot|_Overshoot.*outside the L-inf ball"):
        evaluate(CodedModel(), data, [spec], 8 / 255, device=CPU, checks=None)
