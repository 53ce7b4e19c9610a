"""``ades bench`` training-step rows name a defense, or a defense with a scheduler objective."""

from __future__ import annotations

import pytest

from ades_core.benchmark import BenchSettings, defense_row_config, time_calls
from ades_core.config import ConfigError


def test_a_row_is_a_defense_or_a_defense_with_its_objective():
    settings = BenchSettings(steps=3)
    plain = defense_row_config("ades", settings)
    assert plain.defense == "ades" and plain.scheduler.objective == "target-quantile" and plain.attack.steps == 3
    lookahead = defense_row_config("ades:lookahead", settings)
    assert lookahead.defense == "ades" and lookahead.scheduler.objective == "lookahead"


def test_an_unknown_objective_in_a_row_is_a_one_line_error():
    with pytest.raises(ConfigError, match="lookahed"):
        defense_row_config("ades:lookahed", BenchSettings())


def test_timings_carry_the_mean_beside_the_median():
    import torch

    counter = iter(range(100))
    rows = time_calls({"f": lambda: next(counter)}, torch.device("cpu"), warmup=0, repeats=4)
    assert set(rows["f"]) == {"min", "median", "mean", "repeats"} and rows["f"]["repeats"] == 4
    assert rows["f"]["min"] <= rows["f"]["mean"]
