"""The non-finite guard: a NaN/Inf step stops the run naming its step, or is undone without a trace."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from torch import nn

from ades_core import RunConfig, build
from ades_core.engine.nonfinite import NonFiniteError, StepGuard
from ades_core.engine.runfolder.state_files import load_training_state
from ades_core.engine.trainer import Trainer
from tests.faults import NaNGradient


class NaNAtSteps(nn.Module):
    """Wraps a defense; its ``loss_steps``-th calls return a NaN loss, ``grad_steps``-th a NaN gradient."""

    def __init__(self, inner, *, loss_steps=(), grad_steps=()) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.loss_steps, self.grad_steps = set(loss_steps), set(grad_steps)
        self.calls = 0

    def step(self, model, x, y, idx):
        self.calls += 1
        out = self.inner.step(model, x, y, idx)
        if self.calls in self.loss_steps:
            return attrs.evolve(out, loss=out.loss * float("nan"))
        if self.calls in self.grad_steps:
            return attrs.evolve(out, loss=NaNGradient.apply(out.loss))
        return out


# ---------------------------------------------------------------- the guard alone


def _parts(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    head = nn.Linear(3, 1)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    adam = torch.optim.Adam(head.parameters(), lr=1e-2)
    return model, head, sgd, adam


def _train(parts, batches, bad=(), guard_mode="skip"):
    model, head, sgd, adam = parts
    guard = StepGuard(guard_mode, [model, head], [sgd, adam])
    flags = []
    for i, x in enumerate(batches):
        sgd.zero_grad(set_to_none=True)
        adam.zero_grad(set_to_none=True)
        guard.begin()
        loss = head(model(x)).square().mean()
        if i in bad:
            loss = loss * float("nan")
        loss.backward()
        finite = guard.finite(loss)
        sgd.step()
        adam.step()
        guard.commit(finite)
        flags.append(bool(finite))
    return flags


def _snapshot(parts):
    model, head, sgd, adam = parts
    tensors = {f"m.{k}": v.clone() for k, v in model.state_dict().items()}
    tensors |= {f"h.{k}": v.clone() for k, v in head.state_dict().items()}
    for name, opt in (("sgd", sgd), ("adam", adam)):
        for i, state in enumerate(opt.state.values()):
            for key, value in state.items():
                tensors[f"{name}.{i}.{key}"] = value.clone()
    return tensors


@pytest.mark.parametrize("bad", [1, 0], ids=["middle step", "first step (lazy optimiser state)"])
def test_a_skipped_step_leaves_no_trace(bad):
    batches = [torch.randn(8, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    guarded = _parts()
    assert _train(guarded, batches, bad={bad}) == [i != bad for i in range(3)]
    reference = _parts()
    _train(reference, [b for i, b in enumerate(batches) if i != bad], guard_mode="stop")
    got, want = _snapshot(guarded), _snapshot(reference)
    assert set(want) <= set(got)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


def test_stop_mode_changes_nothing_and_only_flags():
    parts = _parts()
    batches = [torch.randn(8, 4) for _ in range(2)]
    assert _train(parts, batches, bad={1}, guard_mode="stop") == [True, False]
    assert not torch.isfinite(parts[0][0].weight).all()  # the bad update went through; the trainer stops


def test_a_nan_gradient_with_a_finite_loss_is_caught():
    layer = nn.Linear(2, 1)
    guard = StepGuard("stop", [layer], [])
    loss = NaNGradient.apply(layer(torch.ones(1, 2)).sum())
    loss.backward()
    assert torch.isfinite(loss) and not bool(guard.finite(loss))


# ---------------------------------------------------------------- in the trainer


def _setup(cifar10_dir, **top):
    config = RunConfig.from_dict(
        {
            "defense": "ades",
            "cues": {"names": "entropy"},
            "device": "cpu",
            "model": {"backbone": "ades_cnn_small"},
            "data": {"dataset": "imagefolder", "data_dir": str(cifar10_dir), "train_subset": 64,
                     "test_subset": 16, "batch_size": 16},
            "attack": {"steps": 1},
            "optim": {"epochs": 1},
            "eval": {"steps": 1},
            **top,
        }
    )
    return build(config)


def test_stop_names_the_step_and_keeps_the_last_good_state(tmp_path, cifar10_dir):
    setup = _setup(cifar10_dir, checkpoint_every=1)
    setup.defense = NaNAtSteps(setup.defense, loss_steps={3})
    with pytest.raises(NonFiniteError, match=r"epoch 1, step 3: training stopped; the last good training "
                       r"state \(epoch 1, step 2\) is kept in .*checkpoint.*--resume") as info:
        Trainer(setup, progress=False).fit(tmp_path / "run")
    assert "\n" not in str(info.value)
    state = load_training_state(tmp_path / "run")
    assert state["position"] == {"epoch": 0, "step": 2, "global_step": 2}
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_stop_names_the_exact_step_even_between_log_reads(tmp_path, cifar10_dir):
    setup = _setup(cifar10_dir, log_every=10)
    setup.defense = NaNAtSteps(setup.defense, grad_steps={2})
    with pytest.raises(NonFiniteError, match="epoch 1, step 2: .*no training state had been written yet"):
        Trainer(setup, progress=False).fit(tmp_path / "run")


def test_skip_mode_skips_the_bad_steps_and_finishes(tmp_path, cifar10_dir):
    setup = _setup(cifar10_dir, on_nonfinite="skip", checkpoint_every=1)
    setup.defense = NaNAtSteps(setup.defense, loss_steps={2}, grad_steps={3})
    history = Trainer(setup, progress=False).fit(tmp_path / "run")
    record = history[-1]
    assert record["nonfinite_steps"] == 2 and record["first_nonfinite_step"] == 2
    assert record["samples"] == 32  # two of the four batches of 16 counted
    assert "skipped 2 step(s) with a non-finite loss or gradient (first: step 2)" in record["warnings"][0]
    assert all(torch.isfinite(p).all() for p in setup.model.parameters())
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["nonfinite_steps"] == 2
