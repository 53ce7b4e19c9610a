"""Cues: each equals its definition, computed by hand on a tiny model; normalisation is safe."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from ades_core.config import CueOptions
from ades_core.cues import extract_cues, minmax_normalize
from ades_core.cues.entropy import SoftmaxEntropy
from ades_core.cues.grad import InputGradNorm
from ades_core.cues.mcdropout import MCDropoutUncertainty
from ades_core.protocols import CueContext, CueExtractor
from ades_core.registries import CUES
from tests.strategies import cue_batches
from tests.tiny_models import DropoutBNNet, LinearClassifier


def _batch(seed: int = 0, batch: int = 5):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 2, 2, generator=generator)
    y = torch.randint(0, 3, (batch,), generator=generator)
    return x, y


def test_grad_cue_is_the_l2_norm_of_the_input_gradient_of_cross_entropy():
    model = LinearClassifier(4, 3)
    x, y = _batch()
    # d CE / d x = W^T (softmax(Wx + b) - onehot(y)) for a linear model
    W, b = model.fc.weight.detach(), model.fc.bias.detach()
    p = torch.softmax(x.flatten(1) @ W.T + b, dim=1)
    expected = ((p - F.one_hot(y, 3).float()) @ W).norm(dim=1)
    got = InputGradNorm()(CueContext(model, x, y))
    torch.testing.assert_close(got, expected)


def test_entropy_cue_is_the_softmax_entropy_in_nats():
    model = LinearClassifier(4, 3)
    x, y = _batch()
    p = torch.softmax(model(x), dim=1).detach()
    expected = torch.tensor([-sum(float(q) * math.log(float(q)) for q in row) for row in p])
    torch.testing.assert_close(SoftmaxEntropy()(CueContext(model, x, y)), expected)


def test_entropy_of_extreme_logits_is_finite():
    from ades_core.cues.entropy import softmax_entropy

    values = softmax_entropy(torch.tensor([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]]))
    assert torch.isfinite(values).all()
    torch.testing.assert_close(values, torch.tensor([0.0, math.log(3)]))


def test_grad_and_entropy_share_one_forward_pass():
    model = LinearClassifier(4, 3)
    x, y = _batch()
    ctx = CueContext(model, x, y)
    InputGradNorm()(ctx)
    SoftmaxEntropy()(ctx)
    assert model.forward_calls == 1


def test_mcdropout_features_mode_is_the_mean_class_variance_over_T_head_passes():
    model = LinearClassifier(4, 3)
    x, y = _batch()
    cue = MCDropoutUncertainty(samples=3, p=0.5, mode="features")
    torch.manual_seed(7)
    got = cue(CueContext(model, x, y))
    torch.manual_seed(7)
    features = x.flatten(1)
    probs = [torch.softmax(model.fc(F.dropout(features, 0.5, training=True)), 1) for _ in range(3)]
    mean = sum(probs) / 3
    variance = sum((q - mean) ** 2 for q in probs) / 3  # population variance over T
    torch.testing.assert_close(got, variance.mean(dim=1).detach())
    assert (got >= 0).all() and (got <= 0.25).all()


def test_mcdropout_modules_mode_uses_the_models_own_dropout_and_keeps_bn_frozen():
    model = DropoutBNNet()
    model.train()
    x = torch.rand(6, 3, 4, 4)
    y = torch.zeros(6, dtype=torch.long)
    running_mean = model.bn.running_mean.clone()
    cue = MCDropoutUncertainty(samples=4, mode="auto")
    assert cue.resolved_mode(model) == "modules"
    values = cue(CueContext(model, x, y))
    assert values.shape == (6,) and (values > 0).any()
    torch.testing.assert_close(model.bn.running_mean, running_mean)  # BN stayed in eval
    assert all(m.training for m in model.modules())  # modes restored


def test_mcdropout_on_a_model_without_dropout_falls_back_to_feature_dropout():
    model = LinearClassifier(4, 3)
    assert MCDropoutUncertainty().resolved_mode(model) == "features"
    x, y = _batch()
    values = MCDropoutUncertainty(samples=3)(CueContext(model, x, y))
    assert (values > 0).any(), "feature dropout must make the passes differ"


def test_mcdropout_modules_mode_without_dropout_layers_is_a_clear_error():
    import pytest

    model = LinearClassifier(4, 3)
    x, y = _batch()
    with pytest.raises(ValueError, match="needs a model with nn.Dropout layers"):
        MCDropoutUncertainty(mode="modules")(CueContext(model, x, y))


def test_cues_leave_mode_parameters_and_gradients_untouched():
    model = DropoutBNNet()
    model.train()
    model.drop.eval()  # a mixed-mode model must come back mixed
    x = torch.rand(4, 3, 4, 4)
    y = torch.tensor([0, 1, 2, 3])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extractors = [CUES.build(n, CueOptions()) for n in ("grad", "entropy", "mcdropout")]
    extract_cues(extractors, CueContext(model, x, y))
    assert model.training and not model.drop.training and model.bn.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(p.grad is None for p in model.parameters())


def test_built_in_cues_satisfy_the_protocol():
    for name in CUES:
        assert isinstance(CUES.build(name, CueOptions()), CueExtractor)


def test_extracted_cues_are_normalised_per_column():
    model = LinearClassifier(4, 3)
    x, y = _batch(batch=8)
    cues = extract_cues([InputGradNorm(), SoftmaxEntropy()], CueContext(model, x, y))
    assert cues.values.shape == (8, 2) and cues.names == ("grad", "entropy")
    torch.testing.assert_close(cues.values.amin(0), torch.zeros(2))
    torch.testing.assert_close(cues.values.amax(0), torch.ones(2))


def test_a_constant_cue_normalises_to_one_half_not_nan():
    values = minmax_normalize(torch.tensor([[3.0, 1.0], [3.0, 2.0], [3.0, 5.0]]))
    torch.testing.assert_close(values[:, 0], torch.full((3,), 0.5))
    torch.testing.assert_close(values[:, 1], torch.tensor([0.0, 0.25, 1.0]))


@settings(max_examples=60, deadline=None)
@given(cue_batches(), st.floats(-1e6, 1e6), st.floats(1e-3, 1e6))
def test_normalised_cues_lie_in_unit_interval_for_any_scale(values, shift, scale):
    normalised = minmax_normalize(values * scale + shift)
    assert torch.isfinite(normalised).all()
    assert (normalised >= 0).all() and (normalised <= 1).all()


def test_mcdropout_on_a_model_built_with_drop_rate_zero_samples_feature_dropout():
    """A dropout layer of rate 0 drops nothing: counting it as dropout would make all
    T passes identical and the cue 0 for every sample (a dead cue)."""
    from ades_core.engine.runfolder.model_files import ModelSpec

    spec = ModelSpec(backbone="ades_cnn_small", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3, drop_rate=0.0)
    model = spec.build().eval()
    assert MCDropoutUncertainty().resolved_mode(model) == "features"
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(8, dtype=torch.long)
    values = MCDropoutUncertainty(samples=3)(CueContext(model, x, y))
    assert values.unique().numel() > 1, "the cue must differ between samples"


def test_mcdropout_on_a_model_with_real_dropout_uses_it():
    from ades_core.engine.runfolder.model_files import ModelSpec

    spec = ModelSpec(backbone="ades_cnn_small", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3, drop_rate=0.3)
    assert MCDropoutUncertainty().resolved_mode(spec.build()) == "head"
