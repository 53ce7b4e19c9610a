"""The run config: every bad value fails at construction, with one line naming it."""

from __future__ import annotations

import json

import pytest

from ades_core import RegistryError, RunConfig, format_eps, parse_eps
from ades_core.presets import PRESETS, merge


@pytest.mark.parametrize(
    ("text", "value"),
    [("8/255", 8 / 255), ("0.0314", 0.0314), (" 2 / 255 ", 2 / 255), (0.5, 0.5), (0, 0.0), ("1", 1.0)],
)
def test_budgets_parse_as_fractions_or_decimals(text, value):
    assert parse_eps(text) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("text", ["abc", "1.5", "8/0", "-0.1", "nan", "", True])
def test_bad_budgets_are_refused_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"budget .*(8/255|outside \[0, 1\])"):
        parse_eps(text)


def test_budgets_in_255ths_print_the_same_way():
    assert format_eps(8 / 255) == "8/255"
    assert format_eps(parse_eps("2/255")) == "2/255"
    assert format_eps(0.0314) == "0.0314"


def test_defaults_are_the_paper_setting():
    config = RunConfig()
    assert config.model.backbone == "ades_wrn34_10"
    assert config.optim.epochs == 100 and config.optim.lr == 0.1
    assert config.optim.momentum == 0.9 and config.optim.weight_decay == 5e-4
    assert config.optim.milestone_epochs() == [75, 90]
    assert config.attack.steps == 10 and config.attack.alpha == pytest.approx(2 / 255)
    assert config.data.batch_size == 128
    assert config.eval.eps is None and config.eval.steps == 20  # None: the norm's default
    assert config.with_resolved_defaults().eval.eps == pytest.approx(8 / 255)
    assert config.cues.mc_samples == 3


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(RegistryError, match="unknown defense 'madry'.*pgd-at"):
        RunConfig(defense="madry")
    with pytest.raises(RegistryError, match="unknown cue 'margin'.*entropy, grad, mcdropout"):
        RunConfig.from_dict({"cues": {"names": "grad,margin"}})
    with pytest.raises(RegistryError, match="unknown dataset 'mnist'.*cifar10"):
        RunConfig.from_dict({"data": {"dataset": "mnist"}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"budget": {"eps_min": "8/255", "lam": "250/255"}}, "exceeds 1"),
        ({"attack": {"steps": 0}}, "steps"),
        ({"attack": {"alpha": 0}}, "alpha"),
        ({"optim": {"epochs": 0}}, "epochs"),
        ({"data": {"train_subset": -5}}, "train_subset"),
        ({"cues": {"mc_samples": 1}}, "mc_samples"),
        ({"cues": {"names": "grad,grad"}}, "repeated"),
        ({"scheduler": {"weights": "1,-1,1"}}, "weights"),
        ({"scheduler": {"weights": "1,1"}}, "one weight per cue"),
        ({"device": "gpu0"}, "device"),
        ({"optim": {"milestones": "0.9,0.5"}}, "milestones"),
        ({"optim": {"epochs": 3, "bogus": 1}}, "unknown OptimConfig field"),
    ],
)
def test_bad_values_fail_at_construction(raw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RunConfig.from_dict(raw)


def test_config_round_trips_through_json():
    config = RunConfig.from_dict(
        {"defense": "static-des", "cues": {"names": "grad,entropy"}, "scheduler": {"weights": "2,1"}}
    )
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_explicit_values_override_a_preset():
    raw = merge(PRESETS["quick"], {"optim": {"epochs": 7}, "model": {"backbone": "ades_wrn16_4"}})
    config = RunConfig.from_dict(raw)
    assert config.optim.epochs == 7
    assert config.model.backbone == "ades_wrn16_4"
    assert config.data.train_subset == PRESETS["quick"]["data"]["train_subset"]


def test_evaluation_only_attacks_cannot_train():
    with pytest.raises(ValueError, match="'autoattack' is for evaluation only; training attacks: fgsm, pgd"):
        RunConfig.from_dict({"attack": {"name": "autoattack"}})
