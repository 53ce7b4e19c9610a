"""The L2 threat model: attacks stay in each sample's L2 ball and [0, 1], PGD finds the
closed-form optimum on a linear model, and the envelope gradient is the dual (L2) norm.

L2 budgets are Euclidean radii in pixel space (``0.5`` on CIFAR-10), one per sample.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from ades_core import RunConfig, build_defense
from ades_core.attacks import FGSM, PGD
from ades_core.attacks.breaking import BreakingRadius
from ades_core.config import ConfigError
from ades_core.defenses import envelope_input
from ades_core.defenses.mma import scaled_step_pgd
from ades_core.norms import L2, LINF, NORMS
from tests.strategies import image_batches, seeds
from tests.tiny_models import LinearClassifier

TOLERANCE = 1e-5  # float32 rounding of x + delta, summed over at most a few hundred pixels


class AnyShapeModel(nn.Module):
    """Three logits from fixed cosine projections of the flattened input: any ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        grid = torch.arange(flat.shape[1], dtype=flat.dtype, device=flat.device)
        weights = torch.stack([torch.cos((k + 1) * 0.7 * grid + k) for k in range(3)])
        return flat @ weights.T + torch.tensor([0.1, -0.2, 0.05])


def l2_budgets(batch: int):
    return st.lists(st.floats(0.0, 3.0, allow_nan=False, width=32), min_size=batch, max_size=batch)


def assert_in_ball_and_box(x: torch.Tensor, x_adv: torch.Tensor, eps: torch.Tensor) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv >= 0).all() and (x_adv <= 1).all()
    distance = (x_adv.float() - x.float()).flatten(1).norm(dim=1)
    assert (distance <= eps + TOLERANCE).all(), (distance, eps)


# ---------------------------------------------------------------- every L2 attack: ball and box


@settings(max_examples=40, deadline=None)
@given(data=st.data(), x=image_batches(), seed=seeds, start=st.sampled_from(["uniform", "normal", "none"]))
def test_l2_pgd_stays_in_each_samples_ball_and_the_box(data, x, seed, start):
    eps = torch.tensor(data.draw(l2_budgets(x.shape[0])))
    alpha = data.draw(st.sampled_from([None, 0.05, 1.0]))
    attack = PGD(steps=3, alpha=alpha, norm="l2", random_start=start != "none",
                 start_noise="normal" if start == "normal" else "uniform")
    torch.manual_seed(seed)
    x_adv = attack(AnyShapeModel(), x, torch.zeros(x.shape[0], dtype=torch.long), eps)
    assert_in_ball_and_box(x, x_adv, eps)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), x=image_batches(), seed=seeds)
def test_fgm_scaled_step_pgd_and_the_start_stay_in_the_ball_and_the_box(data, x, seed):
    eps = torch.tensor(data.draw(l2_budgets(x.shape[0])))
    y = torch.ones(x.shape[0], dtype=torch.long)
    torch.manual_seed(seed)
    assert_in_ball_and_box(x, FGSM(norm="l2")(AnyShapeModel(), x, y, eps), eps)
    stepped = scaled_step_pgd(
        AnyShapeModel(), x, y, eps, 2.5 * eps / 2, steps=2, loss_fn=lambda z, t: F.cross_entropy(z, t, reduction="none"),
        norm="l2",
    )
    assert_in_ball_and_box(x, stepped, eps)
    start = PGD(steps=1, alpha=None, norm="l2").draw_start(x, eps.view(-1, 1, 1, 1))
    assert_in_ball_and_box(x, start, eps)


@settings(max_examples=40, deadline=None)
@given(x=image_batches(), seed=seeds, scale=st.floats(0.0, 5.0, width=32))
def test_the_l2_projection_lands_in_ball_and_box_and_keeps_points_already_there(x, seed, scale):
    generator = torch.Generator().manual_seed(seed)
    eps = torch.rand(x.shape[0], generator=generator) * 2
    radius = eps.view(-1, *([1] * (x.ndim - 1)))
    z = x + scale * torch.randn(x.shape, generator=generator)
    projected = L2.projector(x, radius)(z)
    assert_in_ball_and_box(x, projected, eps)
    inside = L2.projector(x, radius)(projected)
    torch.testing.assert_close(inside, projected, atol=2e-6, rtol=0)


def test_the_uniform_start_fills_the_ball_up_to_its_surface():
    torch.manual_seed(0)
    x = torch.full((2000, 1, 1, 2), 0.5)  # d = 2: radii of a uniform disc have P(r <= t) = t^2
    start = L2.uniform_start(x, 0.3)
    radius = (start - x).flatten(1).norm(dim=1) / 0.3
    assert radius.max() <= 1 + 1e-6
    assert abs(float((radius <= 0.5).float().mean()) - 0.25) < 0.04
    assert abs(float((radius <= 0.9).float().mean()) - 0.81) < 0.04


# ---------------------------------------------------------------- the closed-form optimum


def _linear_pair(seed: int) -> LinearClassifier:
    return LinearClassifier(12, 2, seed=seed)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, eps=st.floats(0.01, 0.4), random_start=st.booleans())
def test_l2_pgd_reaches_the_closed_form_margin_of_a_linear_model(seed, eps, random_start):
    # x in [0.45, 0.55]: a perturbation of L2 length <= 0.4 moves no pixel out of [0, 1], so
    # the box never binds and the best CW margin in the ball is margin(x) + eps * ||w_j - w_y||_2.
    model = _linear_pair(seed % 1000)
    generator = torch.Generator().manual_seed(seed)
    x = 0.45 + 0.1 * torch.rand(4, 3, 2, 2, generator=generator)
    y = torch.tensor([0, 1, 0, 1])
    w = model.fc.weight.detach()
    gap = (w[1] - w[0]).norm()
    # from a random start on the sphere each step turns the iterate toward w_j - w_y by a factor
    # depending on alpha / eps; a step of eps / 2 converges well within 60 steps
    attack = PGD(steps=60, alpha=eps / 2 if random_start else eps / 4, norm="l2", loss="cw", random_start=random_start)
    torch.manual_seed(seed)
    x_adv = attack(model, x, y, eps)

    def margin(inputs: torch.Tensor) -> torch.Tensor:
        logits = model(inputs)
        return logits[torch.arange(4), 1 - y] - logits[torch.arange(4), y]

    expected = margin(x) + eps * gap
    torch.testing.assert_close(margin(x_adv), expected.detach(), atol=2e-3 * float(gap) * max(eps, 0.05), rtol=1e-4)
    torch.testing.assert_close((x_adv - x).flatten(1).norm(dim=1), torch.full((4,), eps), atol=1e-5, rtol=1e-4)


def test_per_sample_budgets_are_honoured_one_by_one():
    model = _linear_pair(3)
    x = torch.full((3, 3, 2, 2), 0.5)
    y = torch.zeros(3, dtype=torch.long)
    eps = torch.tensor([0.0, 0.1, 0.3])
    x_adv = PGD(steps=20, alpha=0.05, norm="l2", loss="cw", random_start=False)(model, x, y, eps)
    torch.testing.assert_close((x_adv - x).flatten(1).norm(dim=1), eps, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- the envelope gradient


def _value_and_derivative(model, x, y, eps, direction_of):
    """V(eps) (CE at the closed-form maximiser) and dV/d eps through envelope_input."""
    eps = eps.clone().requires_grad_(True)
    x_adv = direction_of(eps.detach())
    x_in = envelope_input(x, x_adv, eps, norm="l2")
    assert torch.equal(x_in, x_adv)
    (d_eps,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), eps)

    def value(e):
        return F.cross_entropy(model(direction_of(e)), y, reduction="none")

    h = 1e-3
    finite_difference = (value(eps.detach() + h) - value(eps.detach() - h)) / (2 * h)
    return d_eps, finite_difference.detach()


def test_l2_envelope_derivative_is_the_dual_norm_and_matches_a_finite_difference():
    model = _linear_pair(1)
    x = 0.4 + 0.2 * torch.rand(3, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(3, dtype=torch.long)
    u = (model.fc.weight[1] - model.fc.weight[0]).detach()
    u = (u / u.norm()).view(1, 3, 2, 2)  # the CE maximiser of a two-class linear model is x + eps * u

    d_eps, finite_difference = _value_and_derivative(
        model, x, y, torch.tensor([0.05, 0.1, 0.2]), lambda e: x + e.view(-1, 1, 1, 1) * u
    )
    torch.testing.assert_close(d_eps, finite_difference, rtol=1e-3, atol=1e-5)
    x_star = x + torch.tensor([0.05, 0.1, 0.2]).view(-1, 1, 1, 1) * u
    grad = torch.autograd.grad(
        F.cross_entropy(model(x_star.requires_grad_(True)), y, reduction="sum"), x_star
    )[0]
    torch.testing.assert_close(d_eps, grad.flatten(1).norm(dim=1), rtol=1e-4, atol=1e-6)  # the dual norm


def test_l2_envelope_derivative_with_pixels_held_by_the_box_matches_a_finite_difference():
    # pixel 0 sits at 0.02 with a large negative weight: the maximiser pushes it to 0 and the box
    # holds it there (delta_0 = -0.02); the free pixels take the rest of the ball along w_F.
    torch.manual_seed(0)
    model = LinearClassifier(6, 2, seed=5)
    with torch.no_grad():
        model.fc.weight[0].zero_()
        model.fc.weight[1] = torch.tensor([-5.0, 1.0, -0.5, 2.0, 0.3, -1.0])
    w = model.fc.weight[1].detach()
    x = torch.tensor([0.02, 0.5, 0.5, 0.5, 0.5, 0.5]).view(1, 1, 2, 3)
    y = torch.zeros(1, dtype=torch.long)
    free = torch.ones(6, dtype=torch.bool)
    free[0] = False

    def maximiser(e: torch.Tensor) -> torch.Tensor:
        rest = torch.sqrt(e.view(-1, 1) ** 2 - 0.02**2)
        delta = torch.zeros(e.shape[0], 6)
        delta[:, free] = rest * w[free] / w[free].norm()
        delta[:, 0] = -0.02
        return x + delta.view(-1, 1, 2, 3)

    eps = torch.tensor([0.1])
    assert float(eps * w[0] / w.norm()) < -0.02  # unconstrained, pixel 0 would leave the box
    d_eps, finite_difference = _value_and_derivative(model, x, y, eps, maximiser)
    torch.testing.assert_close(d_eps, finite_difference, rtol=1e-3, atol=1e-5)
    # the closed form: eps * ||g_F|| / ||delta_F|| (larger than ||g_F||: the free part grows faster)
    x_star = maximiser(eps).requires_grad_(True)
    grad = torch.autograd.grad(F.cross_entropy(model(x_star), y, reduction="sum"), x_star)[0].flatten()
    closed = eps * grad[free].norm() / (x_star.detach() - x).flatten()[free].norm()
    torch.testing.assert_close(d_eps, closed, rtol=1e-4, atol=1e-6)


def test_a_zero_l2_budget_has_no_envelope_gradient():
    x = torch.full((1, 1, 1, 3), 0.5)
    eps = torch.zeros(1, requires_grad=True)
    (grad,) = torch.autograd.grad(envelope_input(x, x.clone(), eps, norm="l2").sum(), eps)
    assert grad == 0


# ---------------------------------------------------------------- the norms and the breaking radius


def test_breaking_radius_is_measured_in_the_attacks_norm():
    x = torch.zeros(1, 1, 1, 4)
    y = torch.zeros(1, dtype=torch.long)
    logits = torch.tensor([[0.0, 1.0]])  # misclassified
    iterate = torch.full((1, 1, 1, 4), 0.1)
    l2, linf = BreakingRadius(x, y, norm="l2"), BreakingRadius(x, y)
    l2.observe(iterate, logits)
    linf.observe(iterate, logits)
    torch.testing.assert_close(l2.radius, torch.tensor([0.2]))
    torch.testing.assert_close(linf.radius, torch.tensor([0.1]))


def test_the_registered_norms_and_their_budget_ranges():
    assert set(NORMS.names()) == {"linf", "l2"}
    assert LINF.format(8 / 255) == "8/255" and L2.format(0.5) == "0.5"
    assert L2.diameter(3 * 32 * 32) == pytest.approx(math.sqrt(3072))
    assert L2.large_budget(3072) == pytest.approx(64 / 255 * math.sqrt(3072))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        LINF.check_budget(1.5)
    assert L2.check_budget(1.5) == 1.5
    with pytest.raises(ValueError, match="L2"):
        L2.check_budget(-0.1)


# ---------------------------------------------------------------- configs and defenses in L2


def _l2_config(defense: str, **sections) -> RunConfig:
    raw = {
        "defense": defense,
        "cues": {"names": "grad,entropy"},
        "attack": {"norm": "l2", "steps": 3},
        "budget": {"eps": 0.5, "eps_min": 0.25, "lam": 0.5},
    }
    raw.update(sections)
    return RunConfig.from_dict(raw)


def test_an_l2_config_takes_l2_budgets_and_the_relative_step():
    config = _l2_config("ades", budget={"eps": 2.0, "eps_min": 1.0, "lam": 1.5})
    assert config.norm == "l2" and config.attack.alpha is None
    resolved = config.with_resolved_defaults()
    assert resolved.eval.eps == 0.5 and resolved.eval.alpha is None
    assert config.to_dict()["attack"]["norm"] == "l2"


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"budget": {"eps": 1.5}}, "budget.eps", r"outside \[0, 1\] \(L-inf pixel scale"),
        ({"defense": "fast-at", "attack": {"norm": "l2"}, "budget": {"eps": 0.5}}, "attack.norm",
         "defense 'fast-at' trains in linf only, not l2: "),
        ({"defense": "free-at", "attack": {"norm": "l2"}, "budget": {"eps": 0.5}}, "attack.norm",
         "defense 'free-at' trains in linf only, not l2: "),
        ({"attack": {"norm": "l1"}}, "norm", "unknown norm 'l1'; registered: l2, linf"),
    ],
)
def test_bad_norm_combinations_fail_in_one_line_naming_the_field(raw, field, message):
    with pytest.raises(ConfigError, match=message) as caught:
        RunConfig.from_dict(raw)
    assert caught.value.field.endswith(field) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("defense", "sections"),
    [
        ("pgd-at", {}),
        ("trades", {}),
        ("mart", {}),
        ("static-des", {}),
        ("ades", {"scheduler": {"objective": "paper"}}),
        ("ades", {"scheduler": {"objective": "target-quantile"}}),
        ("ades", {"scheduler": {"objective": "lookahead", "lookahead_every": 1}}),
        ("pgd-at", {"defense_options": {"awp": True}}),
        ("mma", {}),
        ("iaat", {"defense_options": {"iaat_warmup": 0}}),
        ("cat", {}),
    ],
)
def test_every_defense_with_l2_trains_in_l2_balls(defense, sections):
    torch.manual_seed(0)
    config = _l2_config(defense, **sections)
    model = LinearClassifier(12, 3)
    defense_obj = build_defense(config, num_samples=16)
    x = 0.3 + 0.4 * torch.rand(16, 3, 2, 2)
    y = torch.randint(0, 3, (16,))
    out = defense_obj.step(model, x, y, torch.arange(16))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    cap = {"mma": 2.0 * 1.05, "iaat": 4.0}.get(defense, 0.75)
    assert (out.budget.eps <= cap + 1e-6).all()


def test_l2_pgd_inside_a_defense_uses_l2_balls():
    config = _l2_config("pgd-at")
    defense = build_defense(config)
    assert defense.attack.norm is L2 and defense.norm == "l2"
    model = LinearClassifier(12, 3)
    x = torch.rand(8, 3, 2, 2)
    seen = {}
    attack = defense.attack

    def spy(*args, **kwargs):
        out = attack(*args, **kwargs)
        seen["x_adv"] = out
        return out

    defense.attack = spy
    defense.step(model, x, torch.randint(0, 3, (8,)), torch.arange(8))
    assert_in_ball_and_box(x, seen["x_adv"], torch.full((8,), 0.5))
