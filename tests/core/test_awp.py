"""Adversarial weight perturbation: size, where the loss is taken, and what is left after the update."""

from __future__ import annotations

import copy

import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F

from ades_cli.main import cli
from ades_core import RunConfig, build_defense
from ades_core.config import ConfigError
from ades_core.defenses.awp import WeightPerturbation, perturbed_weights
from tests.cli.tiny_runs import GOOD, TINY_RUN, write_images
from tests.tiny_models import DropoutBNNet, LinearClassifier, record_attack


def _config(defense: str, gamma: float = 0.1, **options) -> RunConfig:
    return RunConfig.from_dict(
        {
            "defense": defense,
            "cues": {"names": "grad,entropy"},
            "attack": {"steps": 2, "alpha": "2/255"},
            "defense_options": {"awp": True, "awp_gamma": gamma, **options},
        }
    )


def _batch(batch: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = 0.25 + 0.5 * torch.rand(batch, 1, 2, 3, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y, torch.arange(batch)


def test_each_weight_layer_moves_by_gamma_times_its_norm_up_the_loss_and_nothing_else_moves():
    torch.manual_seed(0)
    model = DropoutBNNet(channels=3, num_classes=4, p=0.0).train()  # BN in train mode, no random masks
    x, y = torch.rand(8, 3, 6, 6), torch.arange(8) % 4
    before = copy.deepcopy(model.state_dict())
    reference = copy.deepcopy(model)
    grads = torch.autograd.grad(
        F.cross_entropy(reference(x), y), [p for _, p in perturbed_weights(reference)]
    )

    gamma = 0.05
    applied = WeightPerturbation(gamma).perturb(model, lambda net: F.cross_entropy(net(x), y))
    after = model.state_dict()
    names = [n for n, _ in perturbed_weights(model)]
    assert names == ["conv.weight", "fc.weight"]  # biases and BatchNorm's affine stay put
    for name, grad in zip(names, grads):
        v = after[name] - before[name]
        torch.testing.assert_close(v.norm() / before[name].norm(), torch.tensor(gamma))
        torch.testing.assert_close(v / v.norm(), grad / grad.norm(), rtol=1e-4, atol=1e-6)
    for name in before:
        if name not in names:  # biases, BN affine and the BN statistics (the proxy ran the forward)
            assert torch.equal(after[name], before[name]), name
    applied.restore()
    for name in names:
        torch.testing.assert_close(model.state_dict()[name], before[name])


@pytest.mark.parametrize("defense_name", ["pgd-at", "trades", "ades"])
def test_the_loss_is_taken_at_w_plus_v_and_the_update_leaves_exactly_w_minus_lr_grad(defense_name):
    torch.manual_seed(0)
    defense = build_defense(_config(defense_name))
    model = LinearClassifier(6, 3)
    x, y, idx = _batch()
    w, b = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    adversarial = record_attack(defense)
    out = defense.step(model, x, y, idx)
    v = model.fc.weight.detach() - w
    torch.testing.assert_close(v.norm() / w.norm(), torch.tensor(0.1))
    assert torch.equal(model.fc.bias.detach(), b)

    shifted = LinearClassifier(6, 3)  # the same classifier at w + v, for the expected loss
    with torch.no_grad():
        shifted.fc.weight.copy_(w + v)
        shifted.fc.bias.copy_(b)
    x_adv = adversarial[0]
    if defense_name == "trades":
        beta = 6.0
        expected = F.cross_entropy(shifted(x), y) + beta * F.kl_div(
            F.log_softmax(shifted(x_adv), dim=1), F.softmax(shifted(x), dim=1), reduction="batchmean"
        )
    else:
        expected = F.cross_entropy(shifted(x_adv), y)
    torch.testing.assert_close(out.loss.detach(), expected.detach())
    expected.backward()

    out.loss.backward()
    torch.testing.assert_close(model.fc.weight.grad, shifted.fc.weight.grad)  # gradients at w + v
    lr = 0.5
    torch.optim.SGD(model.parameters(), lr=lr).step()
    out.after_update()
    torch.testing.assert_close(model.fc.weight.detach(), w - lr * shifted.fc.weight.grad)
    torch.testing.assert_close(model.fc.bias.detach(), b - lr * shifted.fc.bias.grad)


def test_awp_waits_for_its_warm_up_epochs():
    defense = build_defense(_config("pgd-at", awp_warmup=2))
    model = LinearClassifier(6, 3)
    w = model.fc.weight.detach().clone()
    for epoch, perturbs in [(0, False), (1, False), (2, True), (5, True)]:
        defense.start_epoch(epoch, 6)
        out = defense.step(model, *_batch())
        assert (out.after_update is not None) == perturbs
        assert torch.equal(model.fc.weight.detach(), w) != perturbs
        if out.after_update is not None:
            out.after_update()
        torch.testing.assert_close(model.fc.weight.detach(), w)


def test_the_proxy_is_made_once_and_stays_out_of_the_defenses_state_and_parameters():
    defense = build_defense(_config("ades"))
    model = LinearClassifier(6, 3)
    first = defense.step(model, *_batch())
    proxy = defense.awp._proxy
    first.after_update()
    defense.step(model, *_batch(seed=1)).after_update()
    assert defense.awp._proxy is proxy and proxy is not model
    proxy_params = {id(p) for p in proxy.parameters()}
    assert not proxy_params & {id(p) for p in defense.parameters()}
    assert not any(key.startswith("awp") for key in defense.state_dict())


def test_awp_is_refused_with_a_defense_it_does_not_combine_with():
    for name in ("static-des", "fast-at"):
        with pytest.raises(ConfigError, match=f"AWP does not combine with defense '{name}'; it combines with: "):
            build_defense(_config(name))


def test_the_cli_refuses_awp_with_an_unsupported_defense_in_one_line(tmp_path):
    data = write_images(tmp_path / "data", GOOD)
    out = tmp_path / "run"
    args = [*TINY_RUN, "--data-dir", str(data), "--out", str(out), "--defense", "static-des", "--awp"]
    result = CliRunner().invoke(cli, ["run", *args])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == [
        "Error: --awp: AWP does not combine with defense 'static-des'; it combines with: ades, mart, pgd-at, trades"
    ], result.output
    assert not (out / "config.json").exists()
