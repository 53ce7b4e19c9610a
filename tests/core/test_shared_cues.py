"""Shared cue computation: the cheap path gives the values of the naive one where it should."""

from __future__ import annotations

import torch

from ades_core import RunConfig, build_defense
from ades_core.attacks import PGD
from ades_core.backbones import create_classifier
from ades_core.cue_context import CueContext
from ades_core.cues.mcdropout import MCDropoutUncertainty
from tests.tiny_models import LinearClassifier


def _config(point: str, eps_min: str) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": "static-des",
            "cues": {"names": "grad,entropy", "point": point},
            "budget": {"eps_min": eps_min, "lam": "8/255"},
            "attack": {"steps": 2, "random_start": False},
        }
    )


def _batch(n: int = 12):
    generator = torch.Generator().manual_seed(0)
    return 0.2 + 0.6 * torch.rand(n, 1, 2, 3, generator=generator), torch.arange(n) % 3, torch.arange(n)


def test_with_a_zero_floor_start_point_cues_equal_clean_cues_and_the_same_attack():
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    shared = build_defense(_config("start", "0"))
    naive = build_defense(_config("clean", "0"))
    assert shared.shares_start and shared.shares_gradient and not naive.shares_start
    out_shared = shared.step(model, x, y, idx)
    out_naive = naive.step(model, x, y, idx)
    torch.testing.assert_close(out_shared.budget.eps, out_naive.budget.eps)
    torch.testing.assert_close(out_shared.logits_adv, out_naive.logits_adv)


def test_the_start_point_lies_in_the_smallest_ball_and_the_box():
    x, _, _ = _batch()
    defense = build_defense(_config("start", "4/255"))
    start = defense._start_point(torch.cat([x, torch.zeros_like(x), torch.ones_like(x)]))
    base = torch.cat([x, torch.zeros_like(x), torch.ones_like(x)])
    assert ((start - base).abs() <= 4 / 255 + 1e-6).all()
    assert ((start >= 0) & (start <= 1)).all()


def test_pgd_with_the_shared_first_gradient_equals_pgd_computing_it():
    model = LinearClassifier(6, 3)
    x, y, _ = _batch()
    start = (x + 0.01).clamp(0, 1)
    ctx = CueContext(model, start, y)
    attack = PGD(steps=3, alpha=0.01)
    eps = torch.full((x.shape[0],), 0.03)
    with_shared = attack(model, x, y, eps, start=start, start_grad=ctx.input_grad)
    computed = attack(model, x, y, eps, start=start)
    torch.testing.assert_close(with_shared, computed)


def test_head_only_mc_dropout_equals_full_passes_when_dropout_is_in_the_head():
    model = create_classifier("ades_cnn_small", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.rand(6, 3, 32, 32)
    y = torch.arange(6)
    torch.manual_seed(11)
    head = MCDropoutUncertainty(samples=3, mode="head")(CueContext(model, x, y))
    torch.manual_seed(11)
    full = MCDropoutUncertainty(samples=3, mode="modules")(CueContext(model, x, y))
    torch.testing.assert_close(head, full)
    assert (head > 0).any()
    assert MCDropoutUncertainty().resolved_mode(model) == "head"


def test_compiled_model_keeps_its_outputs_and_state_dict_keys():
    from ades_core.builder import compile_model

    model = create_classifier("ades_cnn_small", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3).eval()
    x = torch.rand(4, 3, 32, 32)
    expected = model(x)
    keys = list(model.state_dict())
    compile_model(model, backend="eager")
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.forward_head(model.forward_features(x)), expected)
    assert list(model.state_dict()) == keys
