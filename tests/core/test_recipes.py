"""Each defense's own recipe is a preset that resolves to its documented values."""

from __future__ import annotations

from pathlib import Path

import pytest

from ades_cli.train import PRESET_NAMES
from ades_core.builder import training_passes
from ades_core.config import RunConfig
from ades_core.presets import PRESETS
from ades_core.recipes import RECIPES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "defenses.md"


def _resolved(name: str) -> RunConfig:
    return RunConfig.from_dict(PRESETS[name])


def test_the_cli_offers_every_preset():
    assert set(PRESET_NAMES) == set(PRESETS)


def test_fast_at_follows_wong_et_al_cyclic_rate_and_early_stop():
    c = _resolved("fast-at")
    assert (c.defense, c.model.backbone, c.optim.epochs, c.optim.lr) == ("fast-at", "ades_preact_resnet18", 15, 0.2)
    assert (c.optim.schedule, c.optim.warmup) == ("cyclic", 0.5)
    assert c.defense_options.fast_alpha_ratio == 1.25 and c.attack.bn == "train"
    assert (c.val.split, c.val.early_stop_drop, c.eval.every) == (1000, 0.2, 1)


def test_free_at_makes_the_authors_number_of_passes():
    c = _resolved("free-at")
    assert c.defense_options.replays == 8
    assert training_passes(c.optim.epochs, c.defense_options.replays) == 25


def test_awp_uses_gamma_1e_2_with_pgd_at_and_5e_3_with_trades_and_the_authors_warmups():
    at, trades = _resolved("awp-at"), _resolved("awp-trades")
    assert (at.defense, at.defense_options.awp, at.defense_options.awp_gamma, at.defense_options.awp_warmup) == (
        "pgd-at", True, 1e-2, 0)
    assert (trades.defense, trades.defense_options.awp_gamma, trades.defense_options.awp_warmup) == ("trades", 5e-3, 10)
    assert trades.attack.bn == "eval"


def test_mma_uses_the_soft_margin_test():
    c = _resolved("mma")
    assert c.defense_options.mma_margin == "soft" and c.defense_options.mma_max_eps == pytest.approx(32 / 255)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_is_documented_with_its_source_and_deviations(name):
    recipe, text = RECIPES[name], DOCS.read_text()
    assert f"`--preset {name}`" in text
    assert recipe.source.split(" (")[0] in text
    assert recipe.deviations, "a recipe says what still differs"
    assert recipe.describe().startswith(f"recipe {name}: {recipe.defense}")
